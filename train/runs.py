"""Run folders: what a run is (`RunConfig`), and the one class that reads and writes its folder (`RunFolder`).

`$VGSME_HOME/runs/<study>/<langs joined by +>-w<width>-s<seed>[-eq]/` holds `config.json` (every value needed
to rerun it, the stores' provenance and content fingerprints, the code revision, `status`
running|complete|failed), `metrics.csv` (one row per completed epoch), `best.safetensors` (lowest validation
loss), `last.safetensors` and `state.pt`. `state.pt` is the single source of truth for resuming: it is
written first at the end of every epoch and the other per-epoch files are derived from it, so a run killed
at any instant resumes consistently.

Training, analysis and the report all go through `RunFolder`, so there is one parser of these files, one
"not a run folder" error and one definition of the best epoch. A run records the fingerprint of every store
it trained on; `RunFolder.stale_stores()` compares them with the stores as they are now, so that neither
`train-heads` nor `analyse` silently mixes a run with stores rebuilt since.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import cache
from cache.atomic import atomic_write, make_dirs, write_json
from cache.hashing import sha256_file
from cache.layout import vgsme_home
from train.exposure import Exposure
from train.layers import WEIGHTED, AudioLayer, AudioLayerError, layer_suffix, load_layer
from train.model import TwoTower
from train.schedule import LR_MAX, LR_MIN, WARMUP_FRACTION, WEIGHT_DECAY

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_familiar_acc", "lr", "logit_scale", "seconds",
                  "val_top1_acc")
# Fields that may differ between a run folder and a rerun of it (they do not change the numbers on CPU).
RERUN_FREE_FIELDS = ("device", "tensorboard")
STATUSES = ("running", "complete", "failed")
CHECKPOINTS = ("best", "last")
REQUIRED_KEYS = ("langs", "width", "seed", "audio_stores", "image_store")
# Provenance fields that record when and by what a store was written: reported only when nothing else differs.
_INFORMATIONAL = ("created", "package_version")


class RunConfigError(ValueError):
    """A run folder exists with another configuration, or a run cannot be set up as asked."""


class RunFolderError(ValueError):
    """A run folder's files are missing, malformed, or do not match the stores they were made from."""


class NotARunFolder(RunFolderError):
    """The folder holds no run (no readable config.json written by train-heads)."""


class StaleStoreError(RunFolderError):
    """The stores a run was trained on have changed since: its weights no longer belong to them."""


class TrainingDiverged(RunFolderError):
    """The loss became NaN or infinite: the run stopped, marked `failed`, without saving that epoch."""


@dataclass
class RunConfig:
    """Everything that defines a run. The defaults are the paper's."""

    langs: list[str]
    audio_stores: list[list[str]]  # per language (in `langs` order), the store's path(s): one, or its shards
    image_store: list[str]
    audio_dim: int
    image_dim: int
    width: int = 256
    seed: int = 0
    epochs: int = 24
    batch_size: int = 60
    negatives: int = 11
    negatives_mode: str = "per-anchor"
    logit_mode: str = "fixed100"
    precision: str = "bf16"
    equal_steps: bool = False
    dropout: float = 0.1
    lr_max: float = LR_MAX
    lr_min: float = LR_MIN
    warmup_fraction: float = WARMUP_FRACTION
    weight_decay: float = WEIGHT_DECAY
    optimizer: str = "adam (coupled weight decay)"
    valid_seed: int = 20250817
    audio_bucket: int = 256
    device: str = "cpu"
    reference: bool = False  # train.reference: every occurrence embedded separately, full layer, fp32
    exclude_concepts: list[str] = field(default_factory=list)  # in no training or validation set
    exposure: Exposure = field(default_factory=Exposure)  # language shares, budget, onset, data, vocabulary
    save_epochs: bool = False  # also keep the weights of every epoch (epochs/epoch-NNN.safetensors)
    # train.layers: the encoder layer trained on: a hidden state of the audio stores' layer axis, "weighted"
    # (a learned softmax-weighted sum of all of them), or None (stores of one layer)
    audio_layer: AudioLayer = None
    audio_store_layers: list[int] | None = None  # the audio stores' layer axis (None: one layer)
    tensorboard: bool = False  # also write TensorBoard event files (train.tensorboard): not the run's identity

    def __post_init__(self) -> None:
        self.exclude_concepts = sorted(set(self.exclude_concepts))
        if isinstance(self.exposure, dict):
            self.exposure = Exposure.from_dict(self.exposure)
        self.exposure.check_run(self.langs, self.epochs)
        if self.audio_store_layers is not None:
            self.audio_store_layers = [int(v) for v in self.audio_store_layers]
        if self.audio_layer == WEIGHTED:
            if not self.audio_store_layers:
                raise AudioLayerError(f"--audio-layer {WEIGHTED} needs audio stores with a layer axis "
                                      "(extract-features --layers all)")
            if self.reference:
                raise AudioLayerError(f"--reference replays the authors' model, which has no layer weights: "
                                      f"drop --reference or --audio-layer {WEIGHTED}")
        elif self.audio_layer is not None and (isinstance(self.audio_layer, bool) or not isinstance(self.audio_layer, int)
                                               or self.audio_layer < 0):
            raise AudioLayerError(f"audio_layer {self.audio_layer!r}: a hidden-state number, {WEIGHTED!r} or None")

    @property
    def weighted_layers(self) -> int:
        """How many layers the model's learned weighted sum mixes (0: it reads one layer)."""
        return len(self.audio_store_layers or ()) if self.audio_layer == WEIGHTED else 0

    @property
    def repeats(self) -> int:
        """Passes over the training audio per epoch: 2 for a monolingual equal-steps control, else 1."""
        return 2 if self.equal_steps and len(self.langs) == 1 else 1

    def folder_name(self) -> str:
        return (f"{'+'.join(self.langs)}-w{self.width}-s{self.seed}" + layer_suffix(self.audio_layer)
                + ("-eq" if self.equal_steps else "") + self.exposure.suffix())

    def identity(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RERUN_FREE_FIELDS}

    def store_paths(self) -> dict[str, list[str]]:
        """Each store of the run under its key in config.json (`provenance`, `store_fingerprints`): its
        path(s) joined by commas; audio stores in `langs` order, then the image store."""
        return {",".join(paths): list(paths) for paths in [*self.audio_stores, self.image_store]}


@dataclass(frozen=True)
class StoreChange:
    """How one store differs from what a run recorded when it was trained on it."""

    key: str  # the store's path(s), as config.json names it
    recorded: str | None  # fingerprint recorded by the run (None: an older run that recorded none)
    current: str | None  # fingerprint now (None: the store cannot be opened)
    fields: tuple[str, ...] = ()  # provenance fields that differ, one line each
    problem: str = ""  # why the store could not be opened

    def describe(self) -> str:
        if self.current is None:
            return f"store {self.key}: cannot be opened now ({self.problem})"
        if self.recorded is None:
            return f"store {self.key}: the run recorded no fingerprint for it (trained by an older version)"
        what = "; ".join(self.fields) or "same provenance, different items or features"
        return f"store {self.key}: fingerprint {self.recorded[:12]} → {self.current[:12]} ({what})"


def provenance_changes(recorded: dict, current: dict) -> tuple[str, ...]:
    """The provenance fields that differ between `recorded` and `current` (dicts), one `field: a → b` line each;
    when/by-what fields (`created`, `package_version`) only when nothing else differs."""
    def diff(names: Iterable[str]) -> list[str]:
        lines = []
        for name in names:
            a, b = recorded.get(name), current.get(name)
            if isinstance(a, dict) and isinstance(b, dict):
                lines += [f"{name}.{k}: {a.get(k)!r} → {b.get(k)!r}"
                          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            elif a != b:
                lines.append(f"{name}: {a!r} → {b!r}")
        return lines

    names = sorted(set(recorded) | set(current))
    return tuple(diff(n for n in names if n not in _INFORMATIONAL) or diff(n for n in names if n in _INFORMATIONAL))


def default_open_store(paths: tuple[Path, ...]):
    """`cache.open_store` of a store or its shard set."""
    return cache.open_store(list(paths))


class RunFolder:
    """One run folder: its config, status, metrics, checkpoints, store fingerprints and analysis folder.

    `RunFolder(path)` names a folder that may not hold a run yet (training creates it with `create`);
    `RunFolder.open(path)` is the reader's entry point and refuses a folder without a run. The config is
    read once and cached; the writing methods keep the cache and the file in step.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._config: dict | None = None
        self._weights_fingerprints: dict[str, tuple[tuple[int, int, int], str]] = {}

    # ------------------------------------------------------------------ identity
    @staticmethod
    def is_run_folder(path: str | Path) -> bool:
        """Whether `path` holds a config.json (cheap: used to find the runs of a study)."""
        return (Path(path) / "config.json").is_file()

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        """The run in `path`; `NotARunFolder` when it holds none or its config.json is unreadable."""
        folder = cls(Path(path).resolve())
        file = folder.config_path
        if not file.is_file():
            raise NotARunFolder(f"{folder.path} is not a run folder (no config.json); train it with train-heads")
        try:
            config = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise NotARunFolder(f"{file} cannot be read ({error}); delete the run folder and train it again "
                                "with train-heads") from None
        missing = [k for k in REQUIRED_KEYS if not isinstance(config, dict) or k not in config]
        if missing:
            raise NotARunFolder(f"{file} lacks {missing}; was it written by train-heads?")
        if len(config["audio_stores"]) != len(config["langs"]):
            raise NotARunFolder(f"{file}: {len(config['langs'])} languages but {len(config['audio_stores'])} "
                                "audio stores; delete the run folder and train it again")
        folder._config = config
        return folder

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    # ------------------------------------------------------------------ config
    @property
    def exists(self) -> bool:
        return self.is_run_folder(self.path)

    @property
    def config(self) -> dict:
        if self._config is None:
            self._config = RunFolder.open(self.path).config
        return self._config

    def create(self, config: dict) -> None:
        """Write config.json (atomically; the folder is made when needed)."""
        if config.get("status") not in STATUSES:
            raise RunFolderError(f"status {config.get('status')!r} is not one of {STATUSES}")
        make_dirs(self.path)
        write_json(self.config_path, config)
        self._config = json.loads(json.dumps(config))

    def update(self, **changes: Any) -> None:
        """Rewrite config.json with `changes` (e.g. `status="complete"`)."""
        self.create({**self.config, **changes})

    def mark_failed(self, reason: str) -> None:
        self.update(status="failed", failure=reason)

    @property
    def status(self) -> str | None:
        return self.config.get("status")

    @property
    def failure(self) -> str | None:
        """Why a `failed` run stopped."""
        return self.config.get("failure")

    @property
    def langs(self) -> tuple[str, ...]:
        return tuple(self.config["langs"])

    @property
    def width(self) -> int:
        return int(self.config["width"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def equal_steps(self) -> bool:
        return bool(self.config.get("equal_steps", False))

    @property
    def exclude_concepts(self) -> list[str]:
        """Concepts left out of training and validation (sorted; [] for runs that excluded none)."""
        return sorted(self.config.get("exclude_concepts") or [])

    @property
    def exposure(self) -> Exposure:
        """The run's exposure condition (the defaults for runs trained before exposure regimes existed)."""
        return Exposure.from_dict(self.config.get("exposure"))

    @property
    def train_langs(self) -> str:
        """The training language set as Table 1 groups it: `en+fr`; the equal-steps control adds `-eq`, an
        exposure condition its suffix (`en+fr-r75`), a chosen encoder layer its own (`en-L7`, `en-Lw`), so
        runs of different conditions are never pooled."""
        return ("+".join(self.langs) + layer_suffix(self.audio_layer) + ("-eq" if self.equal_steps else "")
                + self.exposure.suffix())

    @property
    def audio_layer(self) -> AudioLayer:
        """The encoder layer trained on (`train.layers`): a hidden-state number, "weighted", or None."""
        return self.config.get("audio_layer")

    @property
    def audio_store_layers(self) -> tuple[int, ...] | None:
        """The layer axis of the audio stores the run trained on (None: stores of one layer)."""
        layers = self.config.get("audio_store_layers")
        return None if layers is None else tuple(int(v) for v in layers)

    @property
    def audio_read_layer(self) -> int | None:
        """The `layer=` to read or load the run's audio stores with, so that analyses feed the model what
        training fed it (`train.layers.load_layer`)."""
        return load_layer(self.audio_layer)

    @property
    def audio_stores(self) -> dict[str, tuple[Path, ...]]:
        """Per language, the audio store's path(s); relative paths are relative to $VGSME_HOME."""
        return {lang: tuple(_store_path(p) for p in paths)
                for lang, paths in zip(self.langs, self.config["audio_stores"])}

    @property
    def image_store(self) -> tuple[Path, ...]:
        return tuple(_store_path(p) for p in self.config["image_store"])

    def labels(self) -> dict:
        """The columns every per-run analysis table carries."""
        return {"run": self.name, "train_langs": self.train_langs, "width": self.width, "seed": self.seed}

    def check_same_run(self, config: RunConfig) -> None:
        """Refuse to resume or skip a folder that holds a run of another configuration."""
        differing = self.differing_fields(config)
        if differing:
            details = "; ".join(f"{k}: folder has {self.config.get(k)!r}, asked {v!r}" for k, v in differing.items())
            raise RunConfigError(f"run folder {self.path} holds a run with another configuration ({details}). "
                                 f"Use another --study or --name, or --force to retrain it from scratch.")

    def differing_fields(self, config: RunConfig) -> dict[str, Any]:
        """The identity fields of `config` whose values differ from this folder's (a field an older run did
        not record counts as its default)."""
        defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                    for f in dataclasses.fields(RunConfig)}
        defaults["exposure"] = Exposure().to_dict()  # a run trained before exposure regimes had the defaults
        wanted = json.loads(json.dumps(config.identity()))
        return {k: v for k, v in sorted(wanted.items()) if self.config.get(k, defaults.get(k)) != v}

    # ------------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics(self) -> list[dict]:
        """One dict per completed epoch (`epoch` int, the other METRIC_COLUMNS float); [] before the first."""
        if not self.metrics_path.exists():
            return []
        with self.metrics_path.open(newline="") as f:
            try:
                return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
            except (TypeError, ValueError) as error:
                raise RunFolderError(f"{self.metrics_path} is malformed ({error}); rerun train-heads to rewrite it "
                                     "from state.pt") from None

    def metrics_frame(self):
        """`metrics` as a pandas DataFrame with METRIC_COLUMNS (empty before the first epoch)."""
        import pandas as pd

        return pd.DataFrame(self.metrics, columns=list(METRIC_COLUMNS))

    def write_metrics(self, rows: list[dict]) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, METRIC_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.metrics_path, write)

    @property
    def best_row(self) -> dict | None:
        """The epoch with the lowest validation loss (whose weights are best.safetensors); None before the first."""
        return best_metrics_row(self.metrics)

    @property
    def best_epoch(self) -> int | None:
        row = self.best_row
        return None if row is None else row["epoch"]

    # ------------------------------------------------------------------ checkpoints
    @property
    def state_path(self) -> Path:
        return self.path / "state.pt"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files, one per epoch, written from metrics.csv (`train.tensorboard`)."""
        return self.path / "tensorboard"

    def checkpoint_path(self, name: str = "best") -> Path:
        if name not in CHECKPOINTS:
            raise RunFolderError(f"checkpoint {name!r} is not one of {CHECKPOINTS}")
        return self.path / f"{name}.safetensors"

    def epoch_checkpoint_path(self, epoch: int) -> Path:
        """The weights after `epoch` (0: at initialisation) of a run trained with --save-epochs: a learning
        trajectory to score, never used to choose the run's checkpoint."""
        return self.path / "epochs" / f"epoch-{epoch:03d}.safetensors"

    @property
    def checkpoint(self) -> Path:
        """The best checkpoint's path (what analyses use)."""
        return self.checkpoint_path("best")

    def saved_epochs(self) -> list[int]:
        """The epochs whose weights --save-epochs kept (0: at initialisation), ascending; [] without them."""
        return sorted(int(p.stem.removeprefix("epoch-"))
                      for p in (self.path / "epochs").glob("epoch-[0-9][0-9][0-9].safetensors"))

    def _existing_checkpoint(self, name: str | int) -> Path:
        """`best` / `last`, or an int: that saved epoch's weights (`epoch_checkpoint_path`)."""
        weights = self.epoch_checkpoint_path(name) if isinstance(name, int) else self.checkpoint_path(name)
        if not weights.exists():
            if isinstance(name, int):
                raise RunFolderError(f"{weights} does not exist: the run kept no weights of epoch {name} "
                                     "(retrain it with --save-epochs --force)")
            raise RunFolderError(f"{weights} does not exist: the run has not finished an epoch "
                                 "(rerun train-heads to resume it)")
        return weights

    def weights_fingerprint(self, checkpoint: str | int = "best") -> str:
        """sha256 of the checkpoint file: analyses key their caches by it, so a retrained run is recomputed.
        Hashed again only when the file changed (inode, mtime, size), as analyses ask several times a run."""
        weights = self._existing_checkpoint(checkpoint)
        stat = weights.stat()
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        known = self._weights_fingerprints.get(checkpoint)
        if known is None or known[0] != signature:
            known = self._weights_fingerprints[checkpoint] = (signature, sha256_file(weights))
        return known[1]

    def load_model(self, checkpoint: str | int = "best", device: str = "cpu") -> TwoTower:
        """The model with its `best` (lowest validation loss) or `last` weights, or those of a saved epoch
        (an int), in eval mode on `device`."""
        from safetensors.torch import load_file

        weights = self._existing_checkpoint(checkpoint)
        model = TwoTower.from_config(self.config)
        model.load_state_dict(load_file(weights))
        return model.to(device).eval()

    # ------------------------------------------------------------------ layer weights
    @property
    def layer_weights_path(self) -> Path:
        return self.path / "layer_weights.json"

    def write_layer_weights(self, epoch: int, weights: list[float]) -> Path:
        """layer_weights.json: the softmax weights of the best checkpoint's layer sum (`--audio-layer
        weighted`), per stored layer, and the epoch they come from."""
        layers = list(self.audio_store_layers or ())
        if len(layers) != len(weights):
            raise RunFolderError(f"{len(weights)} layer weights for the {len(layers)} stored layers {layers}")
        return write_json(self.layer_weights_path, {"checkpoint": "best", "epoch": int(epoch), "layers": layers,
                                                    "weights": [float(w) for w in weights]})

    def layer_weights(self) -> dict | None:
        """{"layers": [...], "weights": [...], "epoch": N} of a weighted-sum run; None for other runs."""
        if self.audio_layer != WEIGHTED:
            return None
        if not self.layer_weights_path.exists():
            raise RunFolderError(f"{self.layer_weights_path} does not exist: the run has not finished an epoch "
                                 "(rerun train-heads to resume it)")
        try:
            return json.loads(self.layer_weights_path.read_text())
        except json.JSONDecodeError as error:
            raise RunFolderError(f"{self.layer_weights_path} is malformed ({error}); rerun train-heads to rewrite "
                                 "it from state.pt") from None

    # ------------------------------------------------------------------ provenance
    @property
    def analysis_dir(self) -> Path:
        return self.path / "analysis"

    def recorded_store_fingerprints(self) -> dict[str, str]:
        """The fingerprint of each store at training time, under its key (path(s) joined by commas)."""
        return dict(self.config.get("store_fingerprints") or {})

    def store_locations(self) -> dict[str, tuple[Path, ...]]:
        """Each store's key in config.json and its path(s) as they resolve now."""
        raw = [*self.config["audio_stores"], self.config["image_store"]]
        return {",".join(paths): tuple(_store_path(p) for p in paths) for paths in raw}

    def current_store_fingerprints(self, open_store: Callable = default_open_store) -> dict[str, str]:
        """Each store's fingerprint now; `open_store(paths)` opens a store (analyses pass their per-process
        cache of opened stores, whose fingerprints are computed once)."""
        return {key: open_store(paths).fingerprint for key, paths in self.store_locations().items()}

    def changed_stores(self, current: dict[str, str], provenance: dict[str, dict]) -> list[StoreChange]:
        """The stores whose `current` fingerprint differs from the recorded one (`provenance`: their provenance
        dicts now, to name the fields that changed)."""
        recorded = self.recorded_store_fingerprints()
        old_provenance = self.config.get("provenance") or {}
        return [StoreChange(key, recorded.get(key), fp, provenance_changes(old_provenance.get(key, {}),
                                                                           provenance.get(key, {})))
                for key, fp in current.items() if recorded.get(key) != fp]

    def stale_stores(self, open_store: Callable = default_open_store) -> list[StoreChange]:
        """The run's stores that changed since it was trained on them (or cannot be opened any more);
        `open_store(paths)` opens a store."""
        current, provenance, missing = {}, {}, []
        for key, paths in self.store_locations().items():
            try:
                store = open_store(paths)
                current[key] = store.fingerprint
            except (ValueError, OSError) as error:
                missing.append(StoreChange(key, self.recorded_store_fingerprints().get(key), None, problem=str(error)))
                continue
            provenance[key] = store.provenance.to_dict()
        return missing + self.changed_stores(current, provenance)

    def refuse_stale(self, changes: list[StoreChange], what: str) -> None:
        """Raise `StaleStoreError` naming every changed store, when there are any."""
        if changes:
            raise StaleStoreError(f"run {self.path} {what}, but its stores changed since it was trained:\n  "
                                  + "\n  ".join(c.describe() for c in changes)
                                  + "\nits weights belong to the old stores: retrain it with train-heads ... --force")


def best_metrics_row(rows: list[dict]) -> dict | None:
    """The row with the lowest validation loss (the first of equals), None for no rows."""
    return min(rows, key=lambda row: row["val_loss"]) if rows else None


def _store_path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else vgsme_home() / path


def code_revision() -> str | None:
    """`git rev-parse HEAD` of the checkout this code runs from, when there is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def parse_seeds(text: str) -> list[int]:
    """`0-4` → [0, 1, 2, 3, 4]; `0,2,7` and `0-2,9` work too. A descending range or no seed is an error."""
    seeds: list[int] = []
    for part in filter(None, text.replace(" ", ",").split(",")):
        low, _, high = part.partition("-")
        try:
            low_n, high_n = int(low), int(high) if high else int(low)
        except ValueError:
            raise RunConfigError(f"seed {part!r} is not a number or a range like 0-4") from None
        if high_n < low_n:
            raise RunConfigError(f"seed range {part!r} is empty: write it low-high, e.g. {high_n}-{low_n}")
        seeds += list(range(low_n, high_n + 1))
    if not seeds:
        raise RunConfigError("no seeds given: write them like 0-4, 0,3 or 0 1 2")
    return seeds


def plan_runs(lang_sets: list[list[str]], widths: list[int], seeds: list[int], audio_stores: dict[str, list[str]],
              image_store: list[str], audio_dim: int, image_dim: int, exposures: list[Exposure] | None = None,
              audio_layers: list[AudioLayer] | None = None, **options) -> list[RunConfig]:
    """One `RunConfig` per (language set, exposure, audio layer, width, seed), in that order; `options` are
    RunConfig fields."""
    return [RunConfig(langs=list(langs), audio_stores=[audio_stores[lang] for lang in langs], image_store=image_store,
                      audio_dim=audio_dim, image_dim=image_dim, width=width, seed=seed, exposure=exposure,
                      audio_layer=layer, **options)
            for langs in lang_sets for exposure in exposures or [Exposure()] for layer in audio_layers or [None]
            for width in widths for seed in seeds]
