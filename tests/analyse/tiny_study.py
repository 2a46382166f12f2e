"""A tiny real study for the analyse tests: synthetic stores, one-epoch runs, optional excluded concepts.

    root = build_study(tmp_path, langs=(("en",), ("en", "fr")), seeds=(0,), exclude=["cake"])
    # root/cache/synthetic/*.h5, root/runs/tiny/<run>/ (trained, config.json with exclude_concepts)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.synthetic import FAMILIAR, NOVEL, synthetic_items, write_synthetic_store
from train.loop import LoadedStores, train_run
from train.runs import RunConfig

AUDIO_DIM, IMAGE_DIM = 16, 24
CONCEPTS = list(FAMILIAR) + list(NOVEL)
SPLITS = ("train", "train", "valid", "test", "test", "test")


def write_cache(folder: Path, max_frames: int = 4) -> Path:
    """audio-en, audio-fr and image stores: 2 train, 1 valid, 3 test items per concept (2 to `max_frames`
    frames per word); images from 3 sources."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    proto = {"audio": rng.standard_normal((len(CONCEPTS), AUDIO_DIM)), "image": rng.standard_normal((len(CONCEPTS), IMAGE_DIM))}
    n = len(CONCEPTS) * len(SPLITS)
    for lang in ("en", "fr"):
        items = synthetic_items(n, "audio", lang=lang, splits=SPLITS)
        feats = [proto["audio"][i % len(CONCEPTS)] + rng.standard_normal((int(rng.integers(2, max_frames + 1)), AUDIO_DIM)) for i in range(n)]
        write_synthetic_store(folder / f"audio-{lang}.synthetic.h5", "audio", items, feats, lang=lang)
    items = synthetic_items(n, "image", splits=SPLITS, sources=("s1", "s2", "s3"))
    feats = [proto["image"][i % len(CONCEPTS)] + rng.standard_normal((4, IMAGE_DIM)) for i in range(n)]
    write_synthetic_store(folder / "image.synthetic.h5", "image", items, feats)
    return folder


def set_exclusion(run: Path, exclude: list[str]) -> None:
    """Record `exclude` in a run's config.json as train-heads --exclude-concepts does."""
    config = run / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "exclude_concepts": sorted(exclude)}))


def build_study(root: Path, langs=(("en",), ("en", "fr")), seeds=(0,), exclude: list[str] | None = None) -> Path:
    """Stores under root/cache/synthetic and trained runs under root/runs/tiny; returns root/runs/tiny."""
    cache = write_cache(root / "cache" / "synthetic")
    stores = LoadedStores("cpu")
    runs = root / "runs" / "tiny"
    for run_langs in langs:
        for seed in seeds:
            config = RunConfig(langs=list(run_langs), audio_stores=[[str(cache / f"audio-{lang}.synthetic.h5")] for lang in run_langs],
                               image_store=[str(cache / "image.synthetic.h5")], audio_dim=AUDIO_DIM, image_dim=IMAGE_DIM,
                               width=64, epochs=1, batch_size=16, seed=seed, precision="fp32")
            folder = train_run(config, runs / config.folder_name(), stores, progress=False)
            if exclude is not None:
                set_exclusion(folder, exclude)
    return runs
