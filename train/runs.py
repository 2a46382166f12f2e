"""Run folders: what a run is (`RunConfig`), where it lives, and its files.

`$VGSME_HOME/runs/<study>/<langs joined by +>-w<width>-s<seed>[-eq]/` holds `config.json` (every value needed
to rerun it, the stores' provenance, the code revision, `status` running|complete), `metrics.csv` (one row
per completed epoch), `best.safetensors` (lowest validation loss), `last.safetensors` and `state.pt`.
`state.pt` is the single source of truth for resuming: it is written first at the end of every epoch
and the other per-epoch files are derived from it, so a run killed at any instant resumes consistently.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from train.model import TwoTower
from train.schedule import LR_MAX, LR_MIN, WARMUP_FRACTION, WEIGHT_DECAY

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_familiar_acc", "lr", "logit_scale", "seconds",
                  "val_top1_acc")
# Fields that may differ between a run folder and a rerun of it (they do not change the numbers on CPU).
RERUN_FREE_FIELDS = ("device",)


class RunConfigError(ValueError):
    """A run folder exists with another configuration, or a run cannot be set up as asked."""


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

    @property
    def repeats(self) -> int:
        """Passes over the training audio per epoch: 2 for a monolingual equal-steps control, else 1."""
        return 2 if self.equal_steps and len(self.langs) == 1 else 1

    def folder_name(self) -> str:
        return f"{'+'.join(self.langs)}-w{self.width}-s{self.seed}" + ("-eq" if self.equal_steps else "")

    def identity(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RERUN_FREE_FIELDS}


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]
    model: TwoTower = field(repr=False)

    @property
    def best_epoch(self) -> int:
        return min(self.metrics, key=lambda row: row["val_loss"])["epoch"]


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


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` and rename the result onto `path`, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_config(path: Path) -> dict | None:
    file = Path(path) / "config.json"
    return json.loads(file.read_text()) if file.exists() else None


def check_same_run(path: Path, config: RunConfig) -> None:
    """Refuse to resume or skip a folder that holds a run of another configuration."""
    existing = read_config(path)
    if existing is None:
        return
    wanted = json.loads(json.dumps(config.identity()))
    differing = sorted(k for k in wanted if existing.get(k) != wanted[k])
    if differing:
        details = "; ".join(f"{k}: folder has {existing.get(k)!r}, asked {wanted[k]!r}" for k in differing)
        raise RunConfigError(f"run folder {path} holds a run with another configuration ({details}). "
                             f"Use another --study or --name, or --force to retrain it from scratch.")


def write_metrics(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def read_metrics(path: Path) -> list[dict]:
    file = Path(path) / "metrics.csv"
    if not file.exists():
        return []
    with file.open(newline="") as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_run(path: str | Path, checkpoint: str = "best") -> Run:
    """A run folder's config, metrics and model (best-validation weights by default, eval mode)."""
    path = Path(path)
    config = read_config(path)
    if config is None:
        raise FileNotFoundError(f"{path} is not a run folder (no config.json); train it with train-heads")
    return Run(path, config, read_metrics(path), TwoTower.from_run(path, checkpoint))


def parse_seeds(text: str) -> list[int]:
    """`0-4` → [0, 1, 2, 3, 4]; `0,2,7` and `0-2,9` work too."""
    seeds: list[int] = []
    for part in filter(None, text.replace(" ", ",").split(",")):
        low, _, high = part.partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
        except ValueError:
            raise RunConfigError(f"seed {part!r} is not a number or a range like 0-4") from None
    return seeds


def plan_runs(lang_sets: list[list[str]], widths: list[int], seeds: list[int], audio_stores: dict[str, list[str]],
              image_store: list[str], audio_dim: int, image_dim: int, **options) -> list[RunConfig]:
    """One `RunConfig` per (language set, width, seed), in that order; `options` are RunConfig fields."""
    return [RunConfig(langs=list(langs), audio_stores=[audio_stores[lang] for lang in langs], image_store=image_store,
                      audio_dim=audio_dim, image_dim=image_dim, width=width, seed=seed, **options)
            for langs in lang_sets for width in widths for seed in seeds]
