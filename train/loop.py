"""The training loop of one run, top to bottom: data, model, optimiser, resume, epochs, checkpoints.

Speed comes from four exact (or nearly exact) choices: features sit in memory (RAM, or GPU memory when
asked) and batches are gathered by tensor indexing; each distinct item of a step is embedded once
(`torch.unique` over the step's indices, then the embeddings are indexed back into the 60 × 12 episodes);
the transformer block is computed for the CLS position only (`train.model.cls_block`); matmuls run under
the machine's fastest native autocast precision (`cache.hardware.resolve_precision`) with fp32 master
weights. Audio is embedded in length-sorted buckets to cut padding. `--reference` (`train.reference`)
replaces all but the first with the authors' way, to show that the fast path changes nothing.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

import cache
from cache.hardware import PRECISION_DTYPES, Precision, resolve_precision
from train.loss import correct_choices, episode_logits, episode_loss, familiar_test_accuracy
from train.model import TwoTower
from train.reference import REFERENCE_PRECISION, occurrence_embeddings
from train.runs import (RunConfig, RunConfigError, atomic_write, check_same_run, code_revision, read_config, write_json,
                        write_metrics)
from train.sampler import EpisodeSampler, Episodes, concept_codes
from train.schedule import make_optimizer, make_schedule, set_lr

log = logging.getLogger(__name__)


class ResidentFeatures:
    """One store's features in memory in the dtype the heads' matmuls read, gathered by index.

    `cache.memory.InMemoryFeatures` holds float16. Under bf16 autocast every gathered batch would be cast
    fp16 → bf16 before the input projection, and that cast measured 4× the cost of the bf16 matmul itself
    on this CPU (65 vs 16 ms for 256 images). So for bf16 runs the store is converted once, in place
    (chunk by chunk in the same memory), and batches are gathered as bf16: the projection then sees the
    very values autocast would have given it; fp32 runs get an fp32 copy (`resident_dtype` says why). The
    gather mirrors InMemoryFeatures.gather: padding positions point at the all-zero row after the last
    frame; numpy `take` on integer views of the same width (numpy has no bf16) on CPU, `index_select` on CUDA.
    """

    def __init__(self, mem, dtype: torch.dtype):
        self.modality = mem.modality
        self.frames = mem.frames_padded
        if dtype == torch.bfloat16:
            flat = self.frames.view(len(self.frames), -1)
            for start in range(0, len(flat), 4096):
                flat[start: start + 4096].view(torch.bfloat16).copy_(flat[start: start + 4096])
            self.frames = self.frames.view(torch.bfloat16)
        elif dtype == torch.float32:
            self.frames = self.frames.float()
        self.lengths = mem.lengths.cpu().numpy().astype(np.int64)
        self.offsets = None if mem.offsets is None else mem.offsets.cpu().numpy().astype(np.int64)

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T_max, D) and pad (B, T_max), True at padding (None for images), for item indices `index`."""
        idx = index.cpu().numpy()
        if self.modality == "image":
            rows, shape, pad = idx, (len(idx),) + tuple(self.frames.shape[1:]), None
        else:
            lens = self.lengths[idx]
            steps = np.arange(int(lens.max(initial=0)))
            pad = steps[None, :] >= lens[:, None]
            rows = np.where(pad, len(self.frames) - 1, self.offsets[idx][:, None] + steps[None, :]).reshape(-1)
            shape = (len(idx), len(steps), self.frames.shape[-1])
            pad = torch.from_numpy(pad).to(self.frames.device)
        if self.frames.device.type == "cpu":
            x = torch.empty(shape, dtype=self.frames.dtype)
            as_int = lambda t: t.view(torch.int32 if t.dtype == torch.float32 else torch.int16).numpy()
            np.take(as_int(self.frames), rows, axis=0, out=as_int(x).reshape((len(rows),) + self.frames.shape[1:]),
                    mode="clip")
        else:
            x = self.frames.index_select(0, torch.as_tensor(rows, device=self.frames.device)).view(shape)
        return x, pad


class LoadedStores:
    """Stores opened, and loaded into memory, once per process: the runs of a sweep share them."""

    def __init__(self, device: str):
        self.device = device
        self._stores: dict[tuple[str, ...], object] = {}
        self._memory: dict[tuple, ResidentFeatures] = {}

    def store(self, paths: list[str]):
        """The `cache.FeatureStore` of one store (its shards as one), opened once."""
        key = tuple(str(p) for p in paths)
        if key not in self._stores:
            self._stores[key] = cache.open_store([Path(p) for p in paths])
        return self._stores[key]

    def memory(self, paths: list[str], precision: str) -> ResidentFeatures:
        """Its features in RAM (CPU runs) or in GPU memory (CUDA runs), loaded once per `resident_dtype`."""
        dtype = resident_dtype(precision)
        key = (tuple(str(p) for p in paths), dtype)
        if key not in self._memory:
            self._memory[key] = ResidentFeatures(self.store(paths).load(device=self.device), dtype)
        return self._memory[key]


def resident_dtype(precision: str) -> torch.dtype:
    """The dtype features sit in memory in for a run of `precision` (bf16|fp16|fp32): the one its input
    projection reads, so no batch is cast on the hot path.

    Measured (docs/training.md, "Features in memory"): a per-batch cast before the projection cost more than
    the projection itself for bf16 (fp16 store + autocast: 193 ms, bf16 store: 41 ms per 128 paper-shaped
    images, forward + backward, one thread, AMX CPU), and 10-60 % for fp32 (fp16 store + cast: 170-390 ms,
    fp32 store: 136-153 ms; also under emulated AVX2). fp32 residency doubles the features' memory: a
    store of float16 features takes twice its file size in RAM.
    """
    return PRECISION_DTYPES[precision]


class AudioPool:
    """The audio stores of a run's languages as one index space (store k's items follow store k−1's)."""

    def __init__(self, mems: list, lengths: list[np.ndarray]):
        self.mems = mems
        self.starts = np.concatenate([[0], np.cumsum([len(n) for n in lengths])])
        self.lengths = torch.from_numpy(np.concatenate(lengths).astype(np.int64))

    def gather(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T_max, D) features and (B, T_max) padding mask of pooled-audio indices `items` (CPU)."""
        if len(self.mems) == 1:
            return self.mems[0].gather(items)
        store = np.searchsorted(self.starts, items.numpy(), side="right") - 1
        parts = [(np.flatnonzero(store == k), k) for k in range(len(self.mems)) if (store == k).any()]
        t_max = int(self.lengths[items].max())
        x = pad = None
        for rows, k in parts:
            xk, pk = self.mems[k].gather(items[rows] - int(self.starts[k]))
            if x is None:
                x = xk.new_zeros((len(items), t_max, xk.shape[-1]))
                pad = pk.new_ones((len(items), t_max))
            rows_t = torch.from_numpy(rows).to(xk.device)
            x[rows_t, : xk.shape[1]] = xk
            pad[rows_t, : pk.shape[1]] = pk
        return x, pad


@dataclass
class TrainingData:
    audio: AudioPool
    image: ResidentFeatures
    train: EpisodeSampler
    valid: EpisodeSampler
    provenance: dict


def prepare_data(config: RunConfig, stores: LoadedStores) -> TrainingData:
    """Load the stores and build the train and validation samplers over familiar concepts only."""
    audio = [(stores.store(paths), stores.memory(paths, config.precision)) for paths in config.audio_stores]
    image_store = stores.store(config.image_store)
    image_mem = stores.memory(config.image_store, config.precision)
    for (store, _), lang, paths in zip(audio, config.langs, config.audio_stores):
        if store.modality != "audio" or store.dim != config.audio_dim:
            raise ValueError(f"{paths[0]} is not a {config.audio_dim}-d audio store (for {lang})")
    if image_store.modality != "image" or image_store.dim != config.image_dim:
        raise ValueError(f"{config.image_store[0]} is not a {config.image_dim}-d image store")
    if len({store.dim for store, _ in audio}) != 1:
        raise ValueError("the audio stores of a run must share one encoder: their dims differ")

    images = image_store.items
    vocabulary = sorted(set(images.concept[(images.kind == "familiar") & (images.split == "train")].tolist()))
    concept = np.concatenate([s.items.concept for s, _ in audio])
    kind = np.concatenate([s.items.kind for s, _ in audio])
    split = np.concatenate([s.items.split for s, _ in audio])

    def sampler(name: str, mode: str) -> EpisodeSampler:
        return EpisodeSampler(concept_codes(concept, (kind == "familiar") & (split == name), vocabulary),
                              concept_codes(images.concept, (images.kind == "familiar") & (images.split == name),
                                            vocabulary),
                              vocabulary, name, config.negatives, mode)

    provenance = {",".join(paths): s.provenance.to_dict() for (s, _), paths in zip(audio, config.audio_stores)}
    provenance[",".join(config.image_store)] = image_store.provenance.to_dict()
    return TrainingData(AudioPool([m for _, m in audio], [s.lengths for s, _ in audio]), image_mem,
                        sampler("train", config.negatives_mode), sampler("valid", "per-anchor"), provenance)


def embed_audio_items(model: TwoTower, pool: AudioPool, items: torch.Tensor, bucket: int) -> torch.Tensor:
    """Embeddings of the audio `items` (U,), computed in length-sorted buckets so little is padding."""
    order = torch.argsort(pool.lengths[items], stable=True)
    sorted_items = items[order]
    parts = [model.embed_audio(*pool.gather(sorted_items[s: s + bucket])) for s in range(0, len(items), bucket)]
    return torch.cat(parts)[torch.argsort(order)]


def embed_image_items(model: TwoTower, images, items: torch.Tensor, bucket: int) -> torch.Tensor:
    return torch.cat([model.embed_image(images.gather(items[s: s + bucket])[0])
                      for s in range(0, len(items), bucket)])


def episode_embeddings(model: TwoTower, data: TrainingData, episodes: Episodes,
                       bucket: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, E) audio and image embeddings of a batch, each distinct item embedded once."""
    audio_items, audio_back = torch.unique(torch.from_numpy(episodes.audio), return_inverse=True)
    image_items, image_back = torch.unique(torch.from_numpy(episodes.image), return_inverse=True)
    audio = embed_audio_items(model, data.audio, audio_items, bucket)
    image = embed_image_items(model, data.image, image_items, bucket)
    return audio[audio_back.to(audio.device)], image[image_back.to(image.device)]


def episode_scores(model: TwoTower, data: TrainingData, episodes: Episodes, bucket: int, reference: bool = False):
    """Audio→image and image→audio logits of a batch; `reference` embeds every occurrence the authors' way."""
    audio, image = (occurrence_embeddings if reference else episode_embeddings)(model, data, episodes, bucket)
    device = audio.device
    valid = [None if v is None else torch.from_numpy(v).to(device) for v in (episodes.image_valid, episodes.audio_valid)]
    return episode_logits(audio, image, model.logit_scale(), *valid)


def train_step(model: TwoTower, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, data: TrainingData,
               episodes: Episodes, autocast, bucket: int, reference: bool = False) -> float:
    """One optimiser step on a batch of episodes; returns its loss."""
    with autocast():
        loss = episode_loss(*episode_scores(model, data, episodes, bucket, reference))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    model.clamp_logit_scale()
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: TwoTower, data: TrainingData, episodes: Episodes, autocast,
             bucket: int, reference: bool = False) -> tuple[float, float, float]:
    """Validation loss, familiar accuracy (two images, as the familiar test) and top-1 of 12 (audio→image)."""
    model.eval()
    with autocast():
        to_image, to_audio = episode_scores(model, data, episodes, bucket, reference)
        loss = episode_loss(to_image, to_audio)
    return (float(loss), float(familiar_test_accuracy(to_image).mean()),
            float(correct_choices(to_image).float().mean()))


def autocast_factory(device_type: str, precision: str):
    """A zero-argument function giving a fresh autocast context (none for fp32)."""
    if precision not in PRECISION_DTYPES:
        raise RunConfigError(f"precision {precision!r} is not one of {', '.join(PRECISION_DTYPES)}: resolve "
                             "`auto` first (train.loop.choose_precision)")
    dtype = PRECISION_DTYPES[precision]
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type, dtype=dtype)


def choose_precision(requested: str, device: str, reference: bool = False) -> Precision:
    """The precision a run trains in: `cache.hardware.resolve_precision`'s answer, except that reference mode
    is fp32 by definition (`auto` gives fp32 there; an explicit other precision is refused)."""
    if not reference:
        return resolve_precision(requested, device)
    if (requested or "auto").lower() not in ("auto", REFERENCE_PRECISION):
        raise RunConfigError(f"--reference trains in {REFERENCE_PRECISION} (the authors' way); drop "
                             f"--precision {requested} or use --precision auto")
    return Precision(REFERENCE_PRECISION, "reference mode: every occurrence, full layer, fp32")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def train_run(config: RunConfig, run_dir: Path, stores: LoadedStores, progress: bool = True) -> Path:
    """Train (or resume, or skip when complete) the run `config` in `run_dir`; returns the folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_same_run(run_dir, config)
    existing = read_config(run_dir)
    if existing is not None and existing.get("status") == "complete":
        log.info("%s is complete; not retrained (use --force to retrain)", run_dir)
        return run_dir
    device = config.device
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    if config.reference and config.precision != REFERENCE_PRECISION:
        raise RunConfigError(f"a reference run trains in {REFERENCE_PRECISION}, not {config.precision}")
    autocast = autocast_factory(device_type, config.precision)

    # data and episodes
    data = prepare_data(config, stores)
    valid_episodes = data.valid.draw(data.valid.anchors, np.random.default_rng(config.valid_seed))
    steps_per_epoch = math.ceil(len(data.train.anchors) * config.repeats / config.batch_size)
    schedule = make_schedule(config.epochs, steps_per_epoch, config.warmup_fraction, config.lr_max, config.lr_min)

    # model, optimiser, randomness
    torch.manual_seed(config.seed)
    model = TwoTower(config.audio_dim, config.image_dim, config.width, config.logit_mode,
                     dropout=config.dropout).to(device)
    optimizer = make_optimizer(model, config.weight_decay)
    scaler = torch.amp.GradScaler(device_type, enabled=config.precision == "fp16" and device_type == "cuda")
    rng = np.random.default_rng(config.seed)
    metrics: list[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "weights": None}
    write_json(run_dir / "config.json", {
        **dataclasses.asdict(config), "status": "running", "code_revision": code_revision(), "provenance": data.provenance,
        "parameter_count": model.parameter_count(), "steps_per_epoch": steps_per_epoch,
        "vocabulary": data.train.vocabulary, "train_audio": len(data.train.anchors),
        "valid_episodes": len(valid_episodes.audio)})

    # resume from the last completed epoch
    state_path = run_dir / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)  # RNG states must stay on CPU
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if device_type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        metrics, best = state["metrics"], state["best"]
        log.info("%s: resuming after epoch %d", run_dir, len(metrics))
        write_epoch_files(run_dir, model, metrics, best)

    for epoch in range(len(metrics), config.epochs):
        started = time.perf_counter()
        model.train()
        order = data.train.epoch_order(rng, config.repeats)
        total_loss, lr = 0.0, config.lr_min
        bar = tqdm(total=len(order), unit="anchor", desc=f"{run_dir.name} {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            anchors = order[start: start + config.batch_size]
            lr = schedule.lr(epoch * steps_per_epoch + step)
            set_lr(optimizer, lr)
            loss = train_step(model, optimizer, scaler, data, data.train.draw(anchors, rng), autocast,
                              config.audio_bucket, config.reference)
            total_loss += loss * len(anchors)
            bar.update(len(anchors))
            bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{metrics[-1]['val_familiar_acc']:.3f}" if metrics else "-",
                            samples_s=f"{bar.n / max(1e-9, time.perf_counter() - started):.0f}")
        bar.close()
        val_loss, val_acc, val_top1 = evaluate(model, data, valid_episodes, autocast, config.audio_bucket,
                                               config.reference)
        metrics.append({"epoch": epoch + 1, "train_loss": total_loss / len(order), "val_loss": val_loss,
                        "val_familiar_acc": val_acc, "lr": lr, "logit_scale": model.logit_scale().item(),
                        "seconds": round(time.perf_counter() - started, 3), "val_top1_acc": val_top1})
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch + 1, "weights": copy.deepcopy(model.state_dict())}
        log.info("%s epoch %d: %s", run_dir.name, epoch + 1, metrics[-1])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state() if device_type == "cuda" else None,
                 "metrics": metrics, "best": best}
        atomic_write(state_path, lambda tmp: torch.save(state, tmp))  # the commit point of the epoch
        write_epoch_files(run_dir, model, metrics, best)

    final = read_config(run_dir)
    write_json(run_dir / "config.json", {**final, "status": "complete"})
    return run_dir


def write_epoch_files(run_dir: Path, model: TwoTower, metrics: list[dict], best: dict) -> None:
    """metrics.csv and the two checkpoints, all derived from the committed state (so safe to redo)."""
    write_metrics(run_dir / "metrics.csv", metrics)
    save_weights(run_dir / "last.safetensors", model.state_dict())
    save_weights(run_dir / "best.safetensors", best["weights"])


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def train_sweep(configs: list[RunConfig], runs_root: Path, name: str | None = None, force: bool = False,
                progress: bool = True, on_done=None, stores: LoadedStores | None = None) -> list[Path]:
    """Train every run of `configs` under `runs_root` (one folder each), sharing the loaded stores.

    A complete run is skipped unless `force`, which deletes its folder first. `name` replaces the folder
    name of a single run. `on_done(path)` is called after each run (the CLI prints it).
    """
    if name is not None and len(configs) != 1:
        raise RunConfigError(f"--name names one run folder, but {len(configs)} runs were asked for")
    stores = stores or LoadedStores(configs[0].device if configs else "cpu")
    done = []
    for config in configs:
        run_dir = Path(runs_root) / (name or config.folder_name())
        if force and run_dir.exists():
            if any(run_dir.iterdir()) and not (run_dir / "config.json").exists():
                raise RunConfigError(f"{run_dir} is not a run folder (no config.json); --force will not delete it")
            shutil.rmtree(run_dir)
        done.append(train_run(config, run_dir, stores, progress))
        if on_done is not None:
            on_done(done[-1])
    return done
