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

import cache
from cache.atomic import atomic_write, remove_leftovers
from cache.clitools import progress_bar
from cache.locks import exclusive, lock_file_for
from cache.hardware import PRECISION_DTYPES, Precision, resolve_precision
from cache.memory import InMemoryFeatures
from train.loss import correct_choices, episode_logits, episode_loss, familiar_test_accuracy
from train.model import TwoTower
from train.reference import REFERENCE_PRECISION, occurrence_embeddings
from train.layers import check_audio_layer, load_layer
from train.runs import RunConfig, RunConfigError, RunFolder, TrainingDiverged, code_revision
from train.sampler import EpisodeSampler, Episodes, concept_codes
from train.schedule import make_optimizer, make_schedule, set_lr
from train.tensorboard import events_wanted, require_tensorboard, write_run_events

log = logging.getLogger(__name__)
LAYER_LOGITS = "audio_layer_weights.logits"  # the state-dict key of train.model.LayerWeights' logits


class LoadedStores:
    """Stores opened, and loaded into memory, once per process: the runs of a sweep share them."""

    def __init__(self, device: str):
        self.device = device
        self._stores: dict[tuple[str, ...], object] = {}
        self._memory: dict[tuple, InMemoryFeatures] = {}

    def store(self, paths: list[str]):
        """The `cache.FeatureStore` of one store (its shards as one), opened once."""
        key = tuple(str(p) for p in paths)
        if key not in self._stores:
            self._stores[key] = cache.open_store([Path(p) for p in paths])
        return self._stores[key]

    def memory(self, paths: list[str], precision: str, layer: int | None = None) -> InMemoryFeatures:
        """Its features in RAM (CPU runs) or in GPU memory (CUDA runs), loaded once per `resident_dtype` and
        layer (`layer`: one hidden state of a layer axis, alone in memory; None: all stored layers)."""
        dtype = resident_dtype(precision)
        key = (tuple(str(p) for p in paths), dtype, layer)
        if key not in self._memory:
            self._memory[key] = self.store(paths).load(device=self.device, dtype=dtype, layer=layer)
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
        """(B, T_max, D) features ((B, T_max, L, D) with every layer of a layer axis) and (B, T_max) padding
        mask of pooled-audio indices `items` (CPU)."""
        if len(self.mems) == 1:
            return self.mems[0].gather(items)
        store = np.searchsorted(self.starts, items.numpy(), side="right") - 1
        parts = [(np.flatnonzero(store == k), k) for k in range(len(self.mems)) if (store == k).any()]
        t_max = int(self.lengths[items].max())
        x = pad = None
        for rows, k in parts:
            xk, pk = self.mems[k].gather(items[rows] - int(self.starts[k]))
            if x is None:
                x = xk.new_zeros((len(items), t_max) + tuple(xk.shape[2:]))
                pad = pk.new_ones((len(items), t_max))
            rows_t = torch.from_numpy(rows).to(xk.device)
            x[rows_t, : xk.shape[1]] = xk
            pad[rows_t, : pk.shape[1]] = pk
        return x, pad


@dataclass
class TrainingData:
    audio: AudioPool
    image: InMemoryFeatures
    train: EpisodeSampler
    valid: EpisodeSampler
    provenance: dict


def prepare_data(config: RunConfig, stores: LoadedStores) -> TrainingData:
    """Load the stores and build the train and validation samplers over familiar concepts only."""
    for paths in config.audio_stores:
        check_audio_layer(config.audio_layer, stores.store(paths), ",".join(paths))
    audio = [(stores.store(paths), stores.memory(paths, config.precision, load_layer(config.audio_layer)))
             for paths in config.audio_stores]
    image_store = stores.store(config.image_store)
    image_mem = stores.memory(config.image_store, config.precision)
    for (store, _), lang, paths in zip(audio, config.langs, config.audio_stores):
        if store.modality != "audio" or store.dim != config.audio_dim:
            raise ValueError(f"{paths[0]} is not a {config.audio_dim}-d audio store (for {lang})")
    if image_store.modality != "image" or image_store.dim != config.image_dim:
        raise ValueError(f"{config.image_store[0]} is not a {config.image_dim}-d image store")
    if len({store.dim for store, _ in audio}) != 1:
        raise ValueError("the audio stores of a run must share one encoder: their dims differ")
    encoders = {",".join(paths): (s.provenance.encoder, s.provenance.encoder_fingerprint, s.provenance.layer,
                                  s.provenance.layers) for (s, _), paths in zip(audio, config.audio_stores)}
    if len(set(encoders.values())) > 1:
        listing = "; ".join(f"{key}: encoder {e!r}, weights {fp!r}, layer {layer}"
                            + (f", layers {list(layers)}" if layers is not None else "")
                            for key, (e, fp, layer, layers) in encoders.items())
        raise RunConfigError(f"the audio stores of a run must come from one encoder (same weights, same layer): "
                             f"{listing}. Extract them again with one encoder, or pick one with --audio-encoder")

    images = image_store.items
    known = set(images.concept.tolist()).union(*(s.items.concept.tolist() for s, _ in audio))
    unknown = sorted(set(config.exclude_concepts) - known)
    if unknown:
        raise RunConfigError(f"--exclude-concepts {' '.join(unknown)}: no such concept in the stores "
                             f"(they hold {', '.join(sorted(known))})")
    # excluded concepts are left out of the vocabulary, so no training or validation episode uses them
    vocabulary = sorted(set(images.concept[(images.kind == "familiar") & (images.split == "train")].tolist())
                        - set(config.exclude_concepts))
    vocabulary = config.exposure.select_vocabulary(vocabulary, config.seed)  # --vocab-size: a nested subset
    concept = np.concatenate([s.items.concept for s, _ in audio])
    kind = np.concatenate([s.items.kind for s, _ in audio])
    split = np.concatenate([s.items.split for s, _ in audio])
    lang = np.concatenate([np.full(len(s.items.concept), k) for k, (s, _) in enumerate(audio)])
    # --data-fraction: a nested subset of each (language, familiar concept)'s training tokens
    tokens = {"train": config.exposure.training_tokens(concept, (kind == "familiar") & (split == "train"),
                                                       np.asarray(config.langs)[lang], config.seed),
              "valid": (kind == "familiar") & (split == "valid")}

    def sampler(name: str, mode: str) -> EpisodeSampler:
        return EpisodeSampler(concept_codes(concept, tokens[name], vocabulary),
                              concept_codes(images.concept, (images.kind == "familiar") & (images.split == name),
                                            vocabulary),
                              vocabulary, name, config.negatives, mode, audio_langs=lang)

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


def train_run(config: RunConfig, run_dir: Path, stores: LoadedStores, progress: bool = True) -> Path:
    """Train (or resume, or skip when complete) the run `config` in `run_dir`; returns the folder.

    A complete run, or a half-trained one (state.pt), whose stores changed since is refused
    (`StaleStoreError`); a `failed` run of other options is replaced, one of the same options is resumed
    (and fails again the same way). A NaN/Inf loss stops the run (`TrainingDiverged`) without saving the epoch.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    if folder.exists:
        folder = RunFolder.open(run_dir)
        if folder.status == "failed" and folder.differing_fields(config):
            log.info("%s failed with other options (%s); replaced", run_dir, folder.failure)
            shutil.rmtree(run_dir)
            folder = RunFolder(run_dir)
        else:
            folder.check_same_run(config)
            on_disk = lambda paths: stores.store([str(p) for p in paths])  # noqa: E731
            if folder.status == "complete":
                folder.refuse_stale(folder.stale_stores(on_disk), "is complete")
                log.info("%s is complete; not retrained (use --force to retrain)", run_dir)
                if events_wanted(folder, config.tensorboard):
                    write_run_events(folder)  # from metrics.csv: a complete run given --tensorboard gets them
                return run_dir
            if folder.state_path.exists():
                folder.refuse_stale(folder.stale_stores(on_disk), "is half-trained (state.pt) and would resume")
    events = events_wanted(folder, config.tensorboard)  # TensorBoard event files, written from metrics.csv
    if events:
        require_tensorboard()  # a missing package is an error before the first epoch, not after it
    device = config.device
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    if config.reference and config.precision != REFERENCE_PRECISION:
        raise RunConfigError(f"a reference run trains in {REFERENCE_PRECISION}, not {config.precision}")
    autocast = autocast_factory(device_type, config.precision)

    # data and episodes
    data = prepare_data(config, stores)
    valid_episodes = data.valid.draw(data.valid.anchors, np.random.default_rng(config.valid_seed))
    # an epoch's size may vary (an L2 onset): the schedule spans the steps of the actual epochs
    epoch_steps = [math.ceil(size / config.batch_size) for size in
                   config.exposure.epoch_sizes([len(pool) for pool in data.train.pools], config.epochs, config.repeats)]
    first_step = np.concatenate([[0], np.cumsum(epoch_steps)]).tolist()
    steps_per_epoch = epoch_steps[0] if len(set(epoch_steps)) == 1 else epoch_steps
    schedule = make_schedule(config.epochs, epoch_steps, config.warmup_fraction, config.lr_max, config.lr_min)

    # model, optimiser, randomness
    torch.manual_seed(config.seed)
    model = TwoTower(config.audio_dim, config.image_dim, config.width, config.logit_mode,
                     dropout=config.dropout, audio_layers=config.weighted_layers).to(device)
    optimizer = make_optimizer(model, config.weight_decay)
    scaler = torch.amp.GradScaler(device_type, enabled=config.precision == "fp16" and device_type == "cuda")
    rng = np.random.default_rng(config.seed)
    metrics: list[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "weights": None}
    folder.create({
        **dataclasses.asdict(config), "status": "running", "code_revision": code_revision(), "provenance": data.provenance,
        "store_fingerprints": {key: stores.store(paths).fingerprint for key, paths in config.store_paths().items()},
        "parameter_count": model.parameter_count(), "steps_per_epoch": steps_per_epoch,
        "vocabulary": data.train.vocabulary, "train_audio": len(data.train.anchors),
        "valid_episodes": len(valid_episodes.audio)})
    if config.save_epochs and not folder.state_path.exists():  # the trajectory's start, before any commit
        save_weights(folder.epoch_checkpoint_path(0), model.state_dict())

    # resume from the last completed epoch
    state_path = folder.state_path
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
        write_epoch_files(run_dir, model, metrics, best, config.save_epochs, events)

    for epoch in range(len(metrics), config.epochs):
        started = time.perf_counter()
        model.train()
        order = data.train.epoch_order(rng, config.repeats, config.exposure, epoch)
        total_loss, lr = 0.0, config.lr_min
        bar = progress_bar(progress, total=len(order), unit="anchor", desc=f"{run_dir.name} {epoch + 1}/{config.epochs}")
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            anchors = order[start: start + config.batch_size]
            lr = schedule.lr(first_step[epoch] + step)
            set_lr(optimizer, lr)
            loss = train_step(model, optimizer, scaler, data, data.train.draw(anchors, rng), autocast,
                              config.audio_bucket, config.reference)
            if not math.isfinite(loss):
                bar.close()
                raise diverged(folder, config, f"epoch {epoch + 1}, step {step + 1}", "training", loss)
            total_loss += loss * len(anchors)
            bar.update(len(anchors))
            bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{metrics[-1]['val_familiar_acc']:.3f}" if metrics else "-",
                            samples_s=f"{bar.n / max(1e-9, time.perf_counter() - started):.0f}")
        bar.close()
        val_loss, val_acc, val_top1 = evaluate(model, data, valid_episodes, autocast, config.audio_bucket,
                                               config.reference)
        if not math.isfinite(val_loss):
            raise diverged(folder, config, f"epoch {epoch + 1}", "validation", val_loss)
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
        write_epoch_files(run_dir, model, metrics, best, config.save_epochs, events)

    folder.update(status="complete")
    return run_dir


def diverged(folder: RunFolder, config: RunConfig, where: str, which: str, value: float) -> TrainingDiverged:
    """Mark the run `failed` (its last committed epoch stays) and say what to change."""
    reason = f"the {which} loss became {value} at {where}"
    folder.mark_failed(reason)
    hints = [f"a lower --lr (this run: {config.lr_max:g})"]
    if config.precision != "fp32":
        hints.append("--precision fp32")
    paths = [path for paths in config.store_paths().values() for path in paths]
    hints.append(f"check the stores with `python -m cache verify {' '.join(paths)}`")
    return TrainingDiverged(f"run {folder.path}: {reason}; stopped without saving that epoch (status: failed). "
                            f"Try {', or '.join(hints)}")


def write_epoch_files(run_dir: Path, model: TwoTower, metrics: list[dict], best: dict,
                      save_epochs: bool = False, events: bool = False) -> None:
    """metrics.csv and the two checkpoints (and, with `save_epochs`, the last committed epoch's weights; with
    `events`, the TensorBoard event files of the epochs that lack them), all derived from the committed state
    (so safe to redo: a run killed before they were written rewrites them)."""
    folder = RunFolder(run_dir)
    folder.write_metrics(metrics)
    save_weights(folder.checkpoint_path("last"), model.state_dict())
    save_weights(folder.checkpoint_path("best"), best["weights"])
    if save_epochs:
        save_weights(folder.epoch_checkpoint_path(len(metrics)), model.state_dict())
    if LAYER_LOGITS in best["weights"]:  # --audio-layer weighted: the best checkpoint's mix, readable as is
        folder.write_layer_weights(best["epoch"], best["weights"][LAYER_LOGITS].float().softmax(-1).tolist())
    if events:
        write_run_events(folder)


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
        with exclusive(lock_file_for(run_dir), f"training {run_dir}"):  # --force may replace the folder
            if force and run_dir.exists():
                if any(run_dir.iterdir()) and not RunFolder.is_run_folder(run_dir):
                    raise RunConfigError(f"{run_dir} is not a run folder (no config.json); --force will not delete it")
                shutil.rmtree(run_dir)
            for leftover in remove_leftovers(run_dir):  # from a write killed mid-way: never read, only clutter
                log.info("removed %s, left by an interrupted write", leftover)
            done.append(train_run(config, run_dir, stores, progress))
        if on_done is not None:
            on_done(done[-1])
    return done
