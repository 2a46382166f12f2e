"""Training-step speed: vgsme's step in each precision against the authors' way, on the paper's shapes.

    .venv/bin/python bench/train_step.py                  # CPU, the paper configuration (W=256, batch 60)
    .venv/bin/python bench/train_step.py --profile 3      # ... and torch.profiler's top ops of 3 steps
    .venv/bin/python bench/train_step.py --device cuda    # on a GPU
    .venv/bin/python bench/train_step.py --demo-sweep -- --width 128 --epochs 12   # the demo's 12 runs

Both sides run the paper's objective: 60 audio anchors, each with 1 positive + 11 negative images and
11 negative audios (720 image and 780 audio sequences per step), on the same episodes drawn from a pool
of 13 concepts × `--per-concept` items (audio ~U[25, 75] × 768 frames, images 64 × 2048), large enough
that few draws repeat.

- reference (the authors' way): a `Dataset` reading every item of an episode from a per-item HDF5 group
  (float32, one group per item), a `DataLoader`, fp32, every sampled sequence through a full
  `nn.TransformerEncoderLayer`, Adam.
- vgsme: features in memory (`cache.memory.InMemoryFeatures`), index gathers, each distinct item embedded
  once, the CLS-only block (`train.loop.train_step`), timed in every precision the device offers (fp32,
  bf16, fp16 on CUDA; `auto` marks the one `train-heads` picks), features resident in that precision's
  dtype (`train.loop.resident_dtype`).

A roofline in the same process: the best GFLOP/s of a plain matmul at the heads' shapes (input
projections, block FFN and attention) in each precision; each step's matmul FLOPs (torch's
FlopCounterMode) per second are printed as a share of it. The machine is printed first.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train-heads: sleeping, not spinning, OpenMP waits

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cache.hardware import describe_device, native_precisions, resolve_device, resolve_precision
from cache.memory import InMemoryFeatures
from train.loop import AudioPool, TrainingData, autocast_factory, resident_dtype, train_step
from train.model import TwoTower
from train.sampler import EpisodeSampler
from train.schedule import make_optimizer

CONCEPTS = 13
AUDIO_DIM, IMAGE_DIM, POSITIONS = 768, 2048, 64


class ReferenceHead(nn.Module):
    """The authors' TransformerPooling: the full encoder layer over [CLS; tokens], CLS output kept."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * dim**-0.5)
        self.layer = nn.TransformerEncoderLayer(width, width // 64, 4 * width, activation="gelu",
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([self.cls.expand(len(x), -1, -1), self.proj(x)], 1)
        if pad is not None:
            pad = torch.cat([pad.new_zeros(len(pad), 1), pad], 1)
        return F.normalize(self.out(self.norm(self.layer(h, src_key_padding_mask=pad)[:, 0])), dim=-1)


class PerItemEpisodes(Dataset):
    """Episode k of a pre-drawn list, each item read from its own HDF5 group, as the authors' loader does."""

    def __init__(self, path: Path, audio: np.ndarray, image: np.ndarray):
        self.path, self.audio, self.image, self.file = path, audio, image, None

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, k: int):
        if self.file is None:
            self.file = h5py.File(self.path, "r")
        audio = [torch.from_numpy(self.file[f"audio/{i}/feature"][()]) for i in self.audio[k]]
        image = torch.stack([torch.from_numpy(self.file[f"image/{i}/feature"][()]) for i in self.image[k]])
        return audio, image


def collate(batch):
    audio = [a for episode, _ in batch for a in episode]
    lengths = torch.tensor([len(a) for a in audio])
    x = nn.utils.rnn.pad_sequence(audio, batch_first=True)
    pad = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
    return x, pad, torch.cat([image for _, image in batch])


def reference_loss(audio_head, image_head, xa, pad, xi, batch: int) -> torch.Tensor:
    a = audio_head(xa, pad).view(batch, 12, -1)
    i = image_head(xi).view(batch, 12, -1)
    to_image = 100 * torch.einsum("be,bke->bk", a[:, 0], i)
    to_audio = 100 * torch.einsum("be,bke->bk", i[:, 0], a)
    logits = torch.cat([to_image, to_audio])
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def make_pool(per_concept: int, rng: np.random.Generator):
    n = CONCEPTS * per_concept
    lengths = rng.integers(25, 76, n)
    audio = torch.randn(int(lengths.sum()), AUDIO_DIM, dtype=torch.float16).numpy()
    images = torch.randn(n, POSITIONS, IMAGE_DIM, dtype=torch.float16).relu_().numpy()  # post-ReLU maps
    codes = np.arange(n) % CONCEPTS
    return audio, lengths, images, codes


def timed(step, n_warmup: int, n_timed: int, device: str) -> list[float]:
    times = []
    for k in range(n_warmup + n_timed):
        start = time.perf_counter()
        step(k)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if k >= n_warmup:
            times.append(time.perf_counter() - start)
    return times


def demo_sweep(train_options: list[str]) -> None:
    """Time `train-heads` on the demo's 12 runs over synthetic stores of the demo's shapes (whisper-base
    512-d audio of ~25 frames per word, efficientnet-lite0 1280-d images of 49 positions; 13 familiar and
    19 novel concepts, 40 words per concept and language, 60 images per concept; 60/20/20 % splits for
    familiar concepts). Features are a concept prototype plus noise: the accuracies say little, the
    times are the point (use the real demo stores when they exist: `make demo` prints its own)."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests.synthetic
    from tests.synthetic import FAMILIAR, NOVEL, synthetic_items, write_synthetic_store

    concepts = list(FAMILIAR + NOVEL)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as home:
        folder = Path(home) / "cache" / "demo"
        folder.mkdir(parents=True)
        splits = ("train", "train", "train", "valid", "test")
        for modality, dim, per in (("audio", 512, 40), ("image", 1280, 60)):
            proto = rng.standard_normal((len(concepts), dim))
            for lang in ("en", "fr", "nl") if modality == "audio" else (None,):
                items = synthetic_items(len(concepts) * per, modality, lang=lang or "", concepts=concepts, splits=splits)
                code = [concepts.index(c) for c in items.concept]
                sizes = rng.integers(15, 36, len(code)) if modality == "audio" else np.full(len(code), 49)
                feats = [proto[c] + 3.0 * rng.standard_normal((n, dim)) for c, n in zip(code, sizes)]
                name = f"audio-{lang}.synthetic.h5" if lang else "image.synthetic.h5"
                write_synthetic_store(folder / name, modality, items, feats, lang=lang or "en")
        command = [str(Path(sys.executable).parent / "train-heads"), "--corpus", "demo", "--configs", "en", "fr", "nl",
                   "en+fr", "en+nl", "fr+nl", "--seeds", "0-1", "--study", "demo", "--quiet", *train_options]
        print(" ".join(command[1:]))
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "VGSME_HOME": home})
        print(f"12 runs in {time.perf_counter() - start:.0f} s (wall, including start-up and loading)")


def matmul_shapes(width: int, batch: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of the heads' matmuls in a step of `batch` anchors: the input projections over every token
    of the step's 12·batch images / 13·batch audios, and the CLS-only block's per-sequence ones."""
    sequences = 12 * batch
    return {"image input projection": (sequences * POSITIONS, IMAGE_DIM, width),
            "audio input projection": (13 * batch * 50, AUDIO_DIM, width),
            "block FFN (W -> 4W)": (sequences, width, 4 * width),
            "block attention (W -> W)": (sequences, width, width)}


def matmul_gflops(shape: tuple[int, int, int], precision: str, device: str, reps: int = 5) -> float:
    """Best GFLOP/s of `F.linear` at `shape` under `precision`'s autocast: the ceiling a step can reach."""
    m, k, n = shape
    x = torch.randn(m, k, device=device).to(resident_dtype(precision))
    w = torch.randn(n, k, device=device)
    autocast = autocast_factory("cuda" if device.startswith("cuda") else "cpu", precision)
    best = float("inf")
    with torch.no_grad(), autocast():
        for k_rep in range(reps + 1):
            start = time.perf_counter()
            F.linear(x, w)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if k_rep:  # the first call warms up
                best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def step_flops(step) -> float:
    """Matmul FLOPs (forward and backward) of one step, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def profile_steps(step, n_steps: int, rows: int = 12) -> str:
    """torch.profiler's table of the ops that take the most self time over `n_steps` steps."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(n_steps):
            step()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main() -> None:
    if "--demo-sweep" in sys.argv:
        options = sys.argv[sys.argv.index("--demo-sweep") + 1:]
        return demo_sweep(options[1:] if options[:1] == ["--"] else options)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--width", type=int, default=256, help="head width W (the paper's middle: 256)")
    parser.add_argument("--batch", type=int, default=60, help="anchors per step (the paper: 60)")
    parser.add_argument("--per-concept", type=int, default=300, help="pool items per concept and modality")
    parser.add_argument("--steps", type=int, default=6, help="timed vgsme steps per precision (after 2 warm-up)")
    parser.add_argument("--reference-steps", type=int, default=2, help="timed reference steps (after 1 warm-up)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--precisions", nargs="+", choices=["bf16", "fp16", "fp32"],
                        help="precisions to time [default: every one the device offers: fp32, bf16 "
                        "(emulated on CPUs without native bf16), fp16 on CUDA]")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N steps of the auto precision and print the top ops")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    auto = resolve_precision("auto", device)
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if device_type == "cuda" else ["fp32", "bf16"])
    if device_type == "cuda" and not torch.cuda.is_bf16_supported() and not args.precisions:
        precisions.remove("bf16")
    print(f"machine: {describe_device(device)}; torch {torch.__version__}; auto precision: {auto.name}")
    rng = np.random.default_rng(0)

    audio, lengths, images, codes = make_pool(args.per_concept, rng)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    sampler = EpisodeSampler(codes, codes, [f"c{k}" for k in range(CONCEPTS)])
    n_steps = 2 + args.steps
    episodes = [sampler.draw(rng.choice(sampler.anchors, args.batch, replace=False), rng) for _ in range(n_steps)]
    distinct = statistics.mean(len(np.unique(e.image)) / e.image.size for e in episodes)
    print(f"pool: {len(lengths)} audio (mean {lengths.mean():.1f} frames) and {len(images)} images; "
          f"{distinct:.0%} of a step's image draws are distinct")

    shapes = matmul_shapes(args.width, args.batch)
    roofline, ours, flops, profiled = {}, {}, None, None
    for precision in precisions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an emulated precision is timed on purpose; its rows say so
            resolve_precision(precision, device)
        gflops = {name: matmul_gflops(shape, precision, device) for name, shape in shapes.items()}
        roofline[precision] = max(gflops.values())
        print(f"{precision} matmul GFLOP/s: " + ", ".join(f"{name} {g:.0f}" for name, g in gflops.items()))
        dtype = resident_dtype(precision)
        mem_audio = InMemoryFeatures.from_numpy("audio", audio, lengths, offsets, device=device, dtype=dtype)
        mem_image = InMemoryFeatures.from_numpy("image", images, device=device, dtype=dtype)
        data = TrainingData(AudioPool([mem_audio], [lengths]), mem_image, sampler, sampler, {})
        torch.manual_seed(0)
        model = TwoTower(AUDIO_DIM, IMAGE_DIM, args.width).to(device)
        optimizer = make_optimizer(model)
        scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16" and device_type == "cuda")
        autocast = autocast_factory(device_type, precision)
        step = lambda k: train_step(model, optimizer, scaler, data, episodes[k % n_steps], autocast, 256)
        ours[precision] = timed(step, 2, args.steps, device)
        if flops is None:
            flops = step_flops(lambda: step(0))
        if args.profile and precision == auto.name:
            profiled = profile_steps(lambda: step(0), args.profile)
        del data, mem_audio, mem_image

    # reference: write the items of its episodes to a per-item float32 HDF5 file, then read them back per item
    ref_n = 1 + args.reference_steps
    ref_audio = np.concatenate([e.audio for e in episodes[:ref_n]])
    ref_image = np.concatenate([e.image for e in episodes[:ref_n]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        with h5py.File(path, "w") as f:
            for i in np.unique(ref_audio):
                f.create_dataset(f"audio/{i}/feature", data=audio[offsets[i]: offsets[i] + lengths[i]].astype(np.float32))
            for i in np.unique(ref_image):
                f.create_dataset(f"image/{i}/feature", data=images[i].astype(np.float32))
        loader = DataLoader(PerItemEpisodes(path, ref_audio, ref_image), batch_size=args.batch,
                            num_workers=args.workers, collate_fn=collate)
        batches = iter(loader)
        torch.manual_seed(0)
        heads = [ReferenceHead(AUDIO_DIM, args.width).to(device), ReferenceHead(IMAGE_DIM, args.width).to(device)]
        ref_optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=2e-4, weight_decay=5e-7)

        def reference_step(_: int) -> None:
            xa, pad, xi = next(batches)
            loss = reference_loss(*heads, xa.to(device), pad.to(device), xi.to(device), args.batch)
            ref_optimizer.zero_grad()
            loss.backward()
            ref_optimizer.step()

        reference = timed(reference_step, 1, args.reference_steps, device)

    print(f"W={args.width}, batch {args.batch} anchors ({12 * args.batch} image + {13 * args.batch} audio sequences), "
          f"device {device}, torch threads {torch.get_num_threads()}; vgsme step: {flops / 1e9:.0f} GFLOP of matmuls "
          f"(forward + backward)")
    ref_s = statistics.median(reference)
    print(f"{'side':58s} {'ms/step':>8s} {'steps/s':>8s} {'samples/s':>9s} {'vs ref':>7s} {'roofline':>9s}")
    print(f"{'reference (per-item HDF5 fp32, full layer, fp32)':58s} {ref_s * 1000:8.0f} {1 / ref_s:8.2f} "
          f"{args.batch / ref_s:9.1f} {'1.0x':>7s} {'':>9s}")
    for precision, times in ours.items():
        seconds = statistics.median(times)
        native = precision in native_precisions(device)
        name = f"vgsme {precision}{'' if native else ' (emulated)'}{' [auto]' if precision == auto.name else ''}"
        efficiency = flops / seconds / 1e9 / roofline[precision]
        print(f"{name:58s} {seconds * 1000:8.0f} {1 / seconds:8.2f} {args.batch / seconds:9.1f} "
              f"{ref_s / seconds:6.1f}x {efficiency:8.0%}")
    print(f"(medians of {len(reference)} reference and {args.steps} vgsme steps; roofline = the step's matmul "
          f"GFLOP/s as a share of the best GFLOP/s measured above at the heads' shapes, same precision)")
    paper_steps = 7200  # the issue's English run: ~18k anchors per epoch / 60 × 24 epochs
    fastest = min(statistics.median(t) for t in ours.values())
    print(f"a paper-scale 24-epoch English run ({paper_steps} steps) at the fastest rate: "
          f"{paper_steps * fastest / 60:.0f} min (reference {paper_steps * ref_s / 3600:.1f} h)")
    if profiled:
        print(f"top ops over {args.profile} {auto.name} steps (torch.profiler):\n{profiled}")


if __name__ == "__main__":
    main()
