"""The GPU check in one call (`make gpu-check`): every figure the project claims for a GPU, measured on this one.

    .venv/bin/python bench/gpu_check.py                       # on a GPU machine: <= 5 minutes on one GPU
    .venv/bin/python bench/gpu_check.py --device cpu --smoke  # the same steps at tiny sizes, on a CPU (seconds)
    .venv/bin/python bench/gpu_check.py --only training       # one step (extraction, training, train_step)

A GPU is lent to this project only now and then, so the check has to be right the first time it runs on one:
every step also runs on a CPU at tiny sizes (`--smoke`), and the test suite runs that (tests/test_gpu_check.py),
so the script cannot rot between loans. Each step is timed; each figure is printed with the device's name and
all of them are written to one JSON file (default bench/results/gpu-check-<device>-<UTC time>.json, a git-ignored
folder). A step that fails is recorded with its error and the others still run (exit status 1 at the end).

1. extraction: `extract-features` on a small synthetic corpus (tests/extract/corpus_fixtures.py) with tiny
   random-weight WavLM, ResNet and ViT models (tests/extract/tiny_models.py) and with the offline pair
   (whisper-base, efficientnet-lite0: the `demo` extra's weights; and whisper-base-hf, the same Whisper weights
   in transformers, every hidden layer), on the CPU (the reference, fp32) and on the
   device in fp32 and in its `auto` precision. Each device store is compared with the CPU store of the same
   items: relative difference ||device - cpu|| / ||cpu|| over all features; fp32 must agree within 1e-2 (TF32
   convolutions and another kernel order, not a bug), the auto (bf16) one is reported.
2. training: bf16 `train-heads` on paper-shaped synthetic stores (WavLM-like 768-d audio of U[25, 75] frames,
   DINO-ResNet-like 2048-d images of 8x8 = 64 positions; 18,000 training anchors per language, the issue's
   English epoch: 300 steps of the paper's batch 60). A short probe run gives the seconds per epoch; the
   paper-scale English run (W=256, 24 epochs) is then trained in full when that takes at most --full-run-limit
   seconds, else extrapolated from the probe (and labelled so), against the <= 30 s target. A packed sweep
   (`train-heads --executor processes --workers K`: several runs at once on one GPU) of the 90-run sweep's mix
   (a monolingual and a bilingual configuration at widths 128, 256, 512, a few epochs each) gives runs per hour
   and the projected time of the 90 runs (6 configurations x 5 seeds x 3 widths, 24 epochs) against the <= 1 h
   target; it is skipped, saying so, when train-heads has no --executor option.
3. train_step: `bench/train_step.py --device <device>`: vgsme's step in every precision against the authors'
   way, with the matmul roofline.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train-heads: sleeping, not spinning, OpenMP waits

import argparse
import contextlib
import datetime
import gc
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout: its packages and the test fixtures this check reuses

from cache.atomic import write_json  # noqa: E402
from cache.hardware import describe_device, resolve_device  # noqa: E402
from cache.store import open_store, open_writer  # noqa: E402
from tests.synthetic import FAMILIAR, synthetic_items, synthetic_provenance  # noqa: E402

STEPS = ("extraction", "training", "train_step")
TARGETS = {"paper_run_s": 30.0, "sweep_90_h": 1.0, "check_min": 5.0}
FP32_TOLERANCE = 1e-2  # relative difference allowed between a device fp32 store and the CPU store
PAPER_EPOCHS, SWEEP_RUNS = 24, 90  # the paper's epochs; its sweep: 6 configurations x 5 seeds x 3 widths


@dataclass(frozen=True)
class Sizes:
    """Everything a mode changes: the full check uses the paper's shapes, the smoke mode tiny ones."""

    corpus: dict  # write_tiny_corpus arguments
    audio_dim: int
    image_dim: int
    frames: tuple[int, int]  # audio frames per item, uniform in [low, high]
    positions: int
    train_items: int  # training anchors per language (familiar, train split)
    valid_items: int
    images_per_concept: int  # of which 1 in 6 is validation
    width: int  # the paper-scale run's
    batch: int
    probe_epochs: int
    paper_epochs: int  # of the "paper-scale" run (24; fewer in the smoke mode)
    sweep_widths: tuple[int, ...]
    sweep_epochs: int
    train_step_args: tuple[str, ...]


FULL = Sizes(corpus={"familiar": 13, "novel": 19}, audio_dim=768, image_dim=2048, frames=(25, 75), positions=64,
             train_items=18_000, valid_items=2_000, images_per_concept=180, width=256, batch=60, probe_epochs=2,
             paper_epochs=PAPER_EPOCHS, sweep_widths=(128, 256, 512), sweep_epochs=2, train_step_args=())
SMOKE = Sizes(corpus={"familiar": 2, "novel": 1, "tokens_per_split": {"train": 2, "valid": 1, "test": 1},
                      "images_per_split": {"train": 2, "valid": 1, "test": 1}},
              audio_dim=32, image_dim=48, frames=(2, 8), positions=4, train_items=117, valid_items=26,
              images_per_concept=6, width=64, batch=8, probe_epochs=1, paper_epochs=2, sweep_widths=(64,),
              sweep_epochs=1,
              train_step_args=("--width", "64", "--batch", "8", "--per-concept", "4", "--steps", "1",
                               "--reference-steps", "1", "--workers", "0", "--precisions", "fp32"))


class StepSkipped(Exception):
    """A step (or its rest) that cannot run here, with the reason: recorded, not a failure."""


@dataclass
class Report:
    """The figures of the check: printed as they come, each with the device's name, and kept for the JSON."""

    device: str
    device_name: str
    smoke: bool
    steps: dict[str, dict] = field(default_factory=dict)

    def figure(self, step: str, text: str, **values) -> None:
        """Print `text` for `step` and record it with its numbers."""
        print(f"[{self.device_name}] {step}: {text}", flush=True)
        record = self.steps.setdefault(step, {"figures": []})
        record["figures"].append({"text": text, **values})

    def run_step(self, step: str, body: Callable[[], None]) -> None:
        """Run one step, timed; a failure is recorded with its error and does not stop the others."""
        started = time.perf_counter()
        record = self.steps.setdefault(step, {"figures": []})
        try:
            body()
            record["status"] = "ok"
        except StepSkipped as reason:  # "partial" when the step measured something before it had to stop
            record.update(status="partial" if record["figures"] else "skipped", reason=str(reason))
            print(f"[{self.device_name}] {step}: skipped: {reason}", flush=True)
        except Exception as error:  # noqa: BLE001 - any failure of a step is a result of the check
            record.update(status="failed", error=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc(limit=8))
            print(f"[{self.device_name}] {step}: FAILED: {type(error).__name__}: {error}", flush=True)
        record["seconds"] = round(time.perf_counter() - started, 2)
        print(f"[{self.device_name}] {step}: {record['status']} in {record['seconds']:.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------- the machine
def machine(device: str) -> dict:
    """torch, CUDA and driver versions, the GPU's name and capability, and `nvidia-smi -L` when present."""
    info = {"device": device, "device_name": describe_device(device), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "cpu": describe_device("cpu"), "python": sys.version.split()[0]}
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        info.update(gpu_name=torch.cuda.get_device_name(index),
                    capability=".".join(map(str, torch.cuda.get_device_capability(index))),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
    if shutil.which("nvidia-smi"):
        for key, command in (("nvidia_smi_L", ["nvidia-smi", "-L"]),
                             ("driver", ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])):
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
            info[key] = result.stdout.strip() or result.stderr.strip()
    return info


def invoke(command, args: list[str]) -> list[str]:
    """Run a click command in this process (as its console script would) and return its stdout lines; a user
    error (a click exception) is raised with its one-line message."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            command.main(args=args, prog_name=command.name, standalone_mode=False)
    finally:
        gc.collect()  # what the command loaded (encoders, stores in GPU memory) goes before the next one
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [line for line in out.getvalue().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- 1. extraction
def relative_difference(path: Path, reference: Path) -> tuple[float, float]:
    """||a - b|| / ||b|| and max |a - b| over every feature of two stores of the same items (float64 sums)."""
    a, b = open_store(path), open_store(reference)
    if a.items.ids.tolist() != b.items.ids.tolist() or a.lengths.tolist() != b.lengths.tolist():
        raise ValueError(f"{path} and {reference} do not hold the same items with the same lengths")
    diff = total = 0.0
    worst = 0.0
    for start in range(0, len(a), 256):
        rows = np.arange(start, min(len(a), start + 256))
        x = a.read(rows)[0].astype(np.float64)
        y = b.read(rows)[0].astype(np.float64)
        diff += float(((x - y) ** 2).sum())
        total += float((y ** 2).sum())
        worst = max(worst, float(np.abs(x - y).max()))
    return (diff ** 0.5) / max(total ** 0.5, 1e-30), worst


def extraction(report: Report, device: str, sizes: Sizes, work: Path) -> None:
    import transformers

    from extract.cli import extract_features
    from tests.extract.corpus_fixtures import write_tiny_corpus
    from tests.extract.tiny_models import save_tiny_resnet, save_tiny_vit, save_tiny_wavlm

    transformers.utils.logging.disable_progress_bar()  # save_pretrained's bars would bury the figures
    corpus = write_tiny_corpus(work / "corpus", langs=("en", "fr"), **sizes.corpus)
    models = work / "models"
    wavlm, resnet, vit = (str(save(models / name)) for save, name in
                          ((save_tiny_wavlm, "tiny-wavlm"), (save_tiny_resnet, "tiny-resnet"), (save_tiny_vit, "tiny-vit")))
    encoder_sets = {
        "tiny WavLM + tiny ResNet": ["--all", "--audio-encoder", wavlm, "--image-encoder", resnet],
        "tiny ViT": ["--modality", "image", "--encoder", vit],
        "offline pair (whisper-base + efficientnet-lite0)": ["--all", "--audio-encoder", "whisper-base",
                                                              "--image-encoder", "efficientnet-lite0"],
        "whisper-base-hf, every layer": ["--lang", "en", "--encoder", "whisper-base-hf", "--layers", "all"],
    }
    sides = [("cpu", "cpu", "auto"), ("device fp32", device, "fp32")]
    if device != "cpu":
        sides.append(("device auto", device, "auto"))  # on a CPU it is the reference itself
    failures = []
    for number, (set_name, options) in enumerate(encoder_sets.items()):
        stores: dict[str, list[Path]] = {}
        try:
            for side, where, precision in sides:
                out = work / "stores" / f"set{number}-{side.replace(' ', '-')}"
                started = time.perf_counter()
                lines = invoke(extract_features, ["--corpus", str(corpus), *options, "--device", where,
                                                  "--precision", precision, "--out", str(out), "--quiet"])
                seconds = time.perf_counter() - started
                stores[side] = [Path(line) for line in lines]
                items = sum(len(open_store(p)) for p in stores[side])
                used = ", ".join(sorted({open_store(p).provenance.precision for p in stores[side]}))
                report.figure("extraction", f"{set_name} on {where} ({side}, {used}): {len(stores[side])} stores, "
                              f"{items} items in {seconds:.1f} s (with model load)", encoders=set_name, side=side,
                              device=where, precision=used, stores=len(stores[side]), items=items,
                              seconds=round(seconds, 2))
        except Exception as error:  # noqa: BLE001 - one encoder set failing (e.g. CTranslate2 without CUDA)
            failures.append(f"{set_name}: {type(error).__name__}: {error}")
            report.figure("extraction", f"{set_name}: FAILED: {type(error).__name__}: {error}", encoders=set_name,
                          failed=True)
            continue
        reference_of = {path.name: path for path in stores["cpu"]}
        for side in [s for s, _, _ in sides if s != "cpu"]:
            for path in stores[side]:
                try:
                    rel, worst = relative_difference(path, reference_of[path.name])
                except (KeyError, ValueError) as error:  # another store set, other items or lengths: a finding
                    failures.append(f"{set_name} {path.name}: {side} cannot be compared with cpu: {error!r}")
                    continue
                ok = rel <= FP32_TOLERANCE if side == "device fp32" else None
                verdict = "" if ok is None else (" (ok)" if ok else f" (OVER the {FP32_TOLERANCE:g} tolerance)")
                report.figure("extraction", f"{set_name} {path.name}: {side} vs cpu: relative difference {rel:.2e}, "
                              f"max |diff| {worst:.2e}{verdict}", encoders=set_name, side=side, store=path.name,
                              relative_difference=rel, max_abs_difference=worst, within_tolerance=ok)
                if ok is False:
                    failures.append(f"{set_name} {path.name}: {side} differs from cpu by {rel:.2e}")
    if failures:
        raise RuntimeError("; ".join(failures))


# ---------------------------------------------------------------------------------------------- 2. training
def write_paper_store(path: Path, modality: str, lang: str, sizes: Sizes, rng: np.random.Generator) -> Path:
    """A store of paper-shaped features: a concept prototype plus noise (slices of one random bank, so that
    18,000 items of 768 x 50 cost seconds, not minutes), through the real writer."""
    dim = sizes.audio_dim if modality == "audio" else sizes.image_dim
    per_concept_valid = 6  # images: 1 in 6 is validation
    if modality == "audio":
        splits = ("train",) * (sizes.train_items // sizes.valid_items) + ("valid",)
        n = sizes.train_items + sizes.valid_items
    else:
        splits = ("train",) * (per_concept_valid - 1) + ("valid",)
        n = sizes.images_per_concept * len(FAMILIAR)
    items = synthetic_items(n, modality, lang=lang, concepts=FAMILIAR, splits=splits)
    code = np.arange(n) % len(FAMILIAR)
    lengths = (rng.integers(sizes.frames[0], sizes.frames[1] + 1, n) if modality == "audio"
               else np.full(n, sizes.positions))
    proto = rng.standard_normal((len(FAMILIAR), dim), dtype=np.float32)
    bank = 3.0 * rng.standard_normal((max(4096, int(lengths.max()) * 64), dim), dtype=np.float32)
    if modality == "image":
        bank = np.abs(bank)  # post-ReLU maps, as a ResNet's final features are
    provenance = synthetic_provenance(modality, dim, lang=lang, positions=sizes.positions if modality == "image" else None,
                                      corpus="gpu-check")
    writer = open_writer(path, provenance, items, dim, positions=sizes.positions if modality == "image" else None)
    starts = rng.integers(0, len(bank) - lengths.max(), n)
    for first in range(0, n, 1000):
        writer.append([proto[code[i]] + bank[starts[i]: starts[i] + lengths[i]] for i in range(first, min(n, first + 1000))])
    writer.finish()
    return path


def verdict(met: bool | None) -> str:
    return "not compared (smoke sizes)" if met is None else "met" if met else "NOT met"


def epoch_seconds(run_dir: Path) -> list[float]:
    from train.runs import RunFolder

    return [row["seconds"] for row in RunFolder.open(run_dir).metrics]


def steps_per_epoch(run_dir: Path) -> int:
    from train.runs import RunFolder

    return int(RunFolder.open(run_dir).config["steps_per_epoch"])


def training(report: Report, device: str, sizes: Sizes, work: Path, full_run_limit: float, workers: int) -> None:
    from train.cli import train_heads

    cache = work / "paper-cache" / "gpu-check"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for modality, lang in (("audio", "en"), ("audio", "fr"), ("image", "")):
        name = f"audio-{lang}.synthetic.h5" if modality == "audio" else "image.synthetic.h5"
        write_paper_store(cache / name, modality, lang or "en", sizes, rng)
    gib = sum(p.stat().st_size for p in cache.iterdir()) / 2**30
    report.figure("training", f"paper-shaped stores written: {gib:.2f} GiB in {time.perf_counter() - started:.1f} s "
                  f"(audio {sizes.audio_dim}-d x U{list(sizes.frames)} frames, {sizes.train_items} training anchors "
                  f"per language; images {sizes.positions} x {sizes.image_dim})", store_gib=round(gib, 2))
    common = ["--cache", str(cache), "--precision", "bf16", "--device", device, "--batch-size", str(sizes.batch),
              "--quiet"]

    def train(out: Path, *options: str) -> float:
        begun = time.perf_counter()
        invoke(train_heads, [*options, *common, "--out", str(out)])
        return time.perf_counter() - begun

    # one English run, W=256: a probe first (it also warms the device up), then in full if that fits
    wall = train(work / "probe", "--langs", "en", "--width", str(sizes.width), "--epochs", str(sizes.probe_epochs))
    probe = epoch_seconds(work / "probe" / f"en-w{sizes.width}-s0")
    per_epoch = statistics.median(probe[1:] or probe)  # the first epoch carries the warm-up
    steps = steps_per_epoch(work / "probe" / f"en-w{sizes.width}-s0")
    report.figure("training", f"probe: English W={sizes.width}, {sizes.probe_epochs} epochs of {steps} steps: "
                  f"{per_epoch:.2f} s per epoch ({1000 * per_epoch / steps:.1f} ms per step incl. validation), "
                  f"{wall:.1f} s wall with loading", epoch_seconds=probe, seconds_per_epoch=per_epoch,
                  steps_per_epoch=steps, wall_seconds=round(wall, 2))
    projected = per_epoch * sizes.paper_epochs
    if projected <= full_run_limit:
        wall = train(work / "paper", "--langs", "en", "--width", str(sizes.width), "--epochs", str(sizes.paper_epochs))
        seconds = sum(epoch_seconds(work / "paper" / f"en-w{sizes.width}-s0"))
        how = "measured"
    else:
        seconds, wall, how = projected, None, f"extrapolated from the {sizes.probe_epochs}-epoch probe"
    met = None if report.smoke else seconds <= TARGETS["paper_run_s"]
    report.figure("training", f"paper-scale English run (W={sizes.width}, {sizes.paper_epochs} epochs, bf16), {how}: "
                  f"{seconds:.1f} s of epochs" + (f", {wall:.1f} s wall with start-up and loading" if wall else "")
                  + f"; target <= {TARGETS['paper_run_s']:.0f} s on an H100-class GPU: " + verdict(met),
                  paper_run_seconds=round(seconds, 2), how=how, wall_seconds=None if wall is None else round(wall, 2),
                  epochs=sizes.paper_epochs, target_met=met)

    if not any(param.name == "executor" for param in train_heads.params):
        raise StepSkipped("the packed sweep needs `train-heads --executor processes --workers K`, which this "
                          "checkout's train-heads does not have yet (the paper-scale run above was measured)")
    configs = ["en", "en+fr"]  # the 90-run sweep's mix: half its configurations monolingual, half bilingual
    runs = len(configs) * len(sizes.sweep_widths)
    wall = train(work / "sweep", "--configs", *configs, "--widths", *map(str, sizes.sweep_widths), "--seeds", "0",
                 "--epochs", str(sizes.sweep_epochs), "--executor", "processes", "--workers", str(workers),
                 "--threads", str(max(1, (os.cpu_count() or 1) // workers)))  # no oversubscribed CPU threads
    run_epochs = runs * sizes.sweep_epochs
    per_hour = 3600 * run_epochs / wall / PAPER_EPOCHS  # 24-epoch runs of this mix per hour
    hours = SWEEP_RUNS / per_hour
    met = None if report.smoke else hours <= TARGETS["sweep_90_h"]
    report.figure("training", f"packed sweep: {runs} runs ({' '.join(configs)} x W {' '.join(map(str, sizes.sweep_widths))}"
                  f", {sizes.sweep_epochs} epochs each) with --executor processes --workers {workers} in {wall:.1f} s "
                  f"wall: {per_hour:.0f} 24-epoch runs/hour (extrapolated, start-up included); 90-run sweep "
                  f"projected {60 * hours:.0f} min; target <= {60 * TARGETS['sweep_90_h']:.0f} min on one H100-class GPU: "
                  + verdict(met), runs=runs, workers=workers, wall_seconds=round(wall, 2),
                  runs_per_hour=round(per_hour, 1), sweep_90_hours=round(hours, 3), target_met=met)


# ---------------------------------------------------------------------------------------------- 3. train_step.py
def train_step(report: Report, device: str, sizes: Sizes) -> None:
    command = [sys.executable, str(REPO / "bench" / "train_step.py"), "--device", device, *sizes.train_step_args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    for line in result.stdout.splitlines():
        if line.strip():
            report.figure("train_step", line)
    if result.returncode:
        raise RuntimeError(f"bench/train_step.py exited with status {result.returncode}: "
                           + (result.stderr.strip().splitlines() or ["(no message)"])[-1])


# ---------------------------------------------------------------------------------------------- main
def default_out(device_name: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = "".join(c if c.isalnum() else "-" for c in device_name.split(" (")[0]).strip("-").lower()
    return REPO / "bench" / "results" / f"gpu-check-{slug}-{stamp}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --smoke: the CPU smoke mode)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every step in seconds (the test suite's mode)")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS), help="run only these steps")
    parser.add_argument("--out", type=Path, help="the JSON file [default: bench/results/gpu-check-<device>-<time>.json]")
    parser.add_argument("--workers", type=int, default=6,
                        help="runs trained at once by the packed sweep (--executor processes --workers K)")
    parser.add_argument("--full-run-limit", type=float, default=60.0, metavar="S",
                        help="train the paper-scale run in full when the probe projects at most S seconds, else "
                        "extrapolate it")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (corpus, models, stores, runs) instead of a temporary folder")
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.exit(2, f"gpu_check: --keep {args.keep} is not empty: give a new folder (in a used one the stores "
                    "and runs would be found complete, and nothing would be timed)\n")
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.exit(2, f"gpu_check: {error} (for the CPU smoke mode: --device cpu --smoke)\n")
    if device == "cpu" and not args.smoke:
        parser.exit(2, "gpu_check: the full check is for a GPU; on a CPU run the smoke mode: --device cpu --smoke\n")
    sizes = SMOKE if args.smoke else FULL
    info = machine(device)
    report = Report(device, info.get("gpu_name") or info["device_name"], args.smoke)
    print(f"[{report.device_name}] machine: " + "; ".join(f"{k} {v}" for k, v in info.items() if v not in (None, "")),
          flush=True)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        work.mkdir(parents=True, exist_ok=True)
        home = os.environ.get("VGSME_HOME")
        os.environ["VGSME_HOME"] = str(work / "home")  # the check's models and caches stay in its folder
        try:
            bodies = {"extraction": lambda: extraction(report, device, sizes, work),
                      "training": lambda: training(report, device, sizes, work, args.full_run_limit, args.workers),
                      "train_step": lambda: train_step(report, device, sizes)}
            for step in STEPS:
                if step in args.only:
                    report.run_step(step, bodies[step])
        finally:
            if home is None:
                os.environ.pop("VGSME_HOME", None)
            else:
                os.environ["VGSME_HOME"] = home
    total = time.perf_counter() - started
    within = total <= 60 * TARGETS["check_min"]
    print(f"[{report.device_name}] whole check: {total:.0f} s" + ("" if args.smoke else
          f"; target <= {TARGETS['check_min']:.0f} min: " + ("met" if within else "NOT met")), flush=True)
    out = args.out or default_out(report.device_name)
    write_json(out, {"machine": info, "smoke": args.smoke, "steps": report.steps, "targets": TARGETS,
                     "seconds": round(total, 1), "check_target_met": None if args.smoke else within,
                     "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                     "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    print(f"[{report.device_name}] figures written to {out}", flush=True)
    return 1 if any(record.get("status") == "failed" for record in report.steps.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
