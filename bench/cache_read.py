"""Read paths for training-style batches: the authors' per-item HDF5 layout against vgsme's stores.

    .venv/bin/python bench/cache_read.py [--items 4000] [--batches 10] [--cold]

Builds, in a temporary folder, one synthetic audio store (items of 25-75 frames x 768) and one image store
(items of 64 x 2048) in five layouts, then times batches of 60 audio items (padded) + 720 images drawn
uniformly without replacement (sorted):
  (a) the authors' layout: one HDF5 group per item, float32, read item by item;
  (b) a vgsme HDF5 store, `FeatureStore.read`;      (c) a vgsme Zarr store, `FeatureStore.read`;
  (d) the store loaded in RAM, `InMemoryFeatures.gather` (single-threaded, float16);
  (e) numpy memmaps of the same float16 arrays, `mm[idx]`.
and the time to load each whole store into RAM (`load()`, which checks every item's CRC-32C), next to the
speed of the checksum pass alone over the same bytes. `--load-only` builds only the vgsme stores and times
the loads. "Warm" reads follow a full read of every file (page cache);
"cold" (--cold, needs root) drops the page cache and reopens before each batch. Prints a table and writes
bench/results/cache_read.json and .csv.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cache.integrity import run_checksums  # noqa: E402
from cache.store import ItemTable, open_store, open_writer  # noqa: E402
from cache.provenance import Provenance  # noqa: E402

AUDIO_DIM, POSITIONS, IMAGE_DIM = 768, 64, 2048
BATCH_AUDIO, BATCH_IMAGES = 60, 720
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ building data
def _pool(rng: np.random.Generator, size: int) -> np.ndarray:
    """A pool of random float16 values; items are windows into it (cheaper than drawing 1.3 G values)."""
    return rng.standard_normal(size).astype(np.float16)


def _item(pool: np.ndarray, i: int, n: int) -> np.ndarray:
    start = (i * 7919 * 64) % (len(pool) - n)
    return pool[start:start + n]


def build(root: Path, n: int, seed: int, stores_only: bool = False) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(25, 76, n)
    pool = _pool(rng, 16 << 20)
    img_pool = np.maximum(pool, 0)  # post-ReLU CNN maps: half the values are exactly 0
    audio = [_item(pool, i, int(t) * AUDIO_DIM).reshape(int(t), AUDIO_DIM) for i, t in enumerate(lengths)]
    images = (lambda i: _item(img_pool, i, POSITIONS * IMAGE_DIM).reshape(POSITIONS, IMAGE_DIM))
    paths: dict[str, Path] = {}

    # (a) the authors' layout: a group per item, float32, (T, 768) and (2048, 8, 8)
    if not stores_only:
        paths["a"] = root / "authors.h5"
        with h5py.File(paths["a"], "w") as f:
            for i in range(n):
                f.create_dataset(f"audio/{i}/feature", data=audio[i].astype(np.float32))
                f.create_dataset(f"image/{i}/feature",
                                 data=images(i).astype(np.float32).T.reshape(IMAGE_DIM, 8, 8))

    # (b), (c) vgsme stores through the real writer
    def items(modality: str) -> ItemTable:
        return ItemTable.from_records({"id": f"{modality}-{i}", "concept": "dog", "kind": "familiar",
                                       "lang": "en" if modality == "audio" else "", "source": "bench",
                                       "split": "train"} for i in range(n))

    for fmt, ext in (("b", "h5"), ("c", "zarr")):
        for modality in ("audio", "image"):
            dim = AUDIO_DIM if modality == "audio" else IMAGE_DIM
            prov = Provenance("bench", "none", None, dim, modality, "en" if modality == "audio" else None)
            path = root / f"{modality}.bench.{ext}"
            w = open_writer(path, prov, items(modality), dim, positions=POSITIONS if modality == "image" else None)
            for a in range(0, n, 200):
                w.append(audio[a:a + 200] if modality == "audio" else [images(i) for i in range(a, min(n, a + 200))])
            w.finish()
            paths[f"{fmt}-{modality}"] = path

    if stores_only:
        return paths
    # (e) plain .npy arrays for memmap
    paths["e-audio"], paths["e-image"], paths["e-offsets"] = root / "audio.npy", root / "image.npy", root / "off.npy"
    np.save(paths["e-audio"], np.concatenate(audio))
    mm = np.lib.format.open_memmap(paths["e-image"], "w+", np.float16, (n, POSITIONS, IMAGE_DIM))
    for i in range(n):
        mm[i] = images(i)
    mm.flush()
    del mm
    np.save(paths["e-offsets"], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    return paths


# ------------------------------------------------------------------------------------------- read paths
def _pad(arrays: list[np.ndarray]) -> np.ndarray:
    t = max(len(a) for a in arrays)
    out = np.zeros((len(arrays), t, arrays[0].shape[1]), arrays[0].dtype)
    for j, a in enumerate(arrays):
        out[j, :len(a)] = a
    return out


class Authors:
    def __init__(self, paths: dict[str, Path]):
        self.f = h5py.File(paths["a"], "r")

    def batch(self, ai: np.ndarray, ii: np.ndarray) -> None:
        _pad([self.f["audio"][str(i)]["feature"][()] for i in ai])
        np.stack([self.f["image"][str(i)]["feature"][()] for i in ii])

    def close(self) -> None:
        self.f.close()


class Store:
    def __init__(self, paths: dict[str, Path], key: str):
        self.audio, self.image = open_store(paths[f"{key}-audio"]), open_store(paths[f"{key}-image"])

    def batch(self, ai: np.ndarray, ii: np.ndarray) -> None:
        self.audio.read(ai)
        self.image.read(ii)

    def close(self) -> None:
        self.audio.close()
        self.image.close()


class InMemory:
    def __init__(self, paths: dict[str, Path]):
        with open_store(paths["b-audio"]) as a, open_store(paths["b-image"]) as i:
            self.audio, self.image = a.load(), i.load()

    def batch(self, ai: np.ndarray, ii: np.ndarray) -> None:
        self.audio.gather(torch.from_numpy(ai))
        self.image.gather(torch.from_numpy(ii))

    def close(self) -> None:
        pass


class Memmap:
    def __init__(self, paths: dict[str, Path]):
        self.audio = np.load(paths["e-audio"], mmap_mode="r")
        self.image = np.load(paths["e-image"], mmap_mode="r")
        self.off = np.load(paths["e-offsets"])

    def batch(self, ai: np.ndarray, ii: np.ndarray) -> None:
        _pad([self.audio[self.off[i]:self.off[i + 1]] for i in ai])
        self.image[ii]

    def close(self) -> None:
        pass


PATHS: dict[str, tuple[str, Callable[[dict[str, Path]], object]]] = {
    "a": ("authors: group per item, fp32", Authors),
    "b": ("vgsme HDF5 store.read", lambda p: Store(p, "b")),
    "c": ("vgsme Zarr store.read", lambda p: Store(p, "c")),
    "d": ("vgsme in RAM, gather", InMemory),
    "e": ("numpy memmap mm[idx]", Memmap),
}


# -------------------------------------------------------------------------------------------------- timing
def warm_files(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(64 << 20):
                    pass


def drop_caches() -> None:
    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=True)


def time_batches(make: Callable, paths: dict[str, Path], batches: list[tuple[np.ndarray, np.ndarray]],
                 cold: bool) -> float:
    """Median ms per batch. Warm: one open, one untimed batch first. Cold: caches dropped, reopened each batch."""
    times = []
    if not cold:
        reader = make(paths)
        reader.batch(*batches[0])
    for ai, ii in batches:
        if cold:
            drop_caches()
            t0 = time.perf_counter()
            reader = make(paths)
            reader.batch(ai, ii)
            times.append(time.perf_counter() - t0)
            reader.close()
        else:
            t0 = time.perf_counter()
            reader.batch(ai, ii)
            times.append(time.perf_counter() - t0)
    if not cold:
        reader.close()
    return 1000 * statistics.median(times)


def time_load(path: Path, cold: bool, repeats: int = 3) -> tuple[float, float]:
    """Median seconds and GB/s to load a whole store into RAM (`FeatureStore.load`), fresh memory each time."""
    times = []
    for _ in range(repeats):
        if cold:
            drop_caches()
        t0 = time.perf_counter()
        with open_store(path) as s:
            mem = s.load()
        times.append(time.perf_counter() - t0)
        nbytes = mem.nbytes
        del mem
    dt = statistics.median(times)
    return dt, nbytes / dt / 1e9


def time_checksums(path: Path, repeats: int = 3) -> float:
    """GB/s of the CRC-32C pass alone over a loaded store's items (the share of `load()` spent checking)."""
    with open_store(path) as s:
        frames = s.load().frames.numpy()
        starts = s.offsets if s.offsets is not None else np.arange(len(s))
        counts = s.lengths if s.offsets is not None else np.ones(len(s), np.int64)
        rows = frames.reshape(len(frames), -1)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_checksums(rows, starts, counts)
        times.append(time.perf_counter() - t0)
    return rows.nbytes / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=4000, help="audio items and images in the synthetic stores")
    ap.add_argument("--batches", type=int, default=10, help="warm batches timed (median); cold uses 3")
    ap.add_argument("--cold", action="store_true", help="also time cold reads (drops the page cache: needs root)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the data and the batch indices")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary stores (default: system tmp)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where cache_read.json/.csv go")
    ap.add_argument("--load-only", action="store_true",
                    help="build only the vgsme stores and time whole-store loads and the checksum pass")
    args = ap.parse_args(argv)
    if args.items < BATCH_IMAGES:
        ap.error(f"--items must be at least {BATCH_IMAGES} (the images of one batch)")
    if args.cold and os.geteuid() != 0:
        ap.error("--cold drops the page cache, which needs root")
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed + 1)
    draw = lambda k: np.sort(rng.choice(args.items, k, replace=False))  # noqa: E731
    batches = [(draw(BATCH_AUDIO), draw(BATCH_IMAGES)) for _ in range(max(args.batches, 3))]

    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="vgsme-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = build(root, args.items, args.seed, stores_only=args.load_only)
        print(f"built {args.items} audio items + {args.items} images in {'the vgsme stores' if args.load_only else 'five layouts'} in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        modes = ["warm"] + (["cold"] if args.cold else [])
        for mode in modes:
            if mode == "warm":
                warm_files(root)
            for key, (label, make) in PATHS.items():
                if args.load_only:
                    break
                if mode == "cold" and key == "d":
                    continue  # in RAM: nothing to read from disk
                ms = time_batches(make, paths, batches[:args.batches] if mode == "warm" else batches[:3], mode == "cold")
                rows.append({"mode": mode, "path": key, "what": label, "ms_per_batch": round(ms, 2),
                             "items_per_s": round((BATCH_AUDIO + BATCH_IMAGES) / ms * 1000)})
                print(f"{mode} {key} {label}: {ms:.1f} ms", file=sys.stderr)
            for key in ("b", "c"):
                for modality in ("audio", "image"):
                    if mode == "warm":
                        warm_files(paths[f"{key}-{modality}"].parent)
                    sec, gbs = time_load(paths[f"{key}-{modality}"], mode == "cold")
                    rows.append({"mode": mode, "path": f"load-{key}-{modality}",
                                 "what": f"load whole {'HDF5' if key == 'b' else 'Zarr'} {modality} store",
                                 "seconds": round(sec, 3), "GB_per_s": round(gbs, 2)})
            for modality in ("audio", "image"):
                rows.append({"mode": mode, "path": f"crc-{modality}", "what": f"CRC-32C pass alone, {modality}",
                             "GB_per_s": round(time_checksums(paths[f"b-{modality}"]), 2)})
    for mode in {r["mode"] for r in rows if "ms_per_batch" in r}:
        ref = {r["path"]: r["ms_per_batch"] for r in rows if r["mode"] == mode and "ms_per_batch" in r}
        for r in rows:
            if r["mode"] == mode and "ms_per_batch" in r:
                r["x_vs_a"] = round(ref["a"] / r["ms_per_batch"], 2)
                r["x_vs_e"] = round(ref["e"] / r["ms_per_batch"], 2)
    print_table(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"items": args.items, "batches": args.batches, "seed": args.seed, "batch": [BATCH_AUDIO, BATCH_IMAGES],
            "machine": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}
    (args.out / "cache_read.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = ["mode", "path", "what", "ms_per_batch", "items_per_s", "x_vs_a", "x_vs_e", "seconds", "GB_per_s"]
    with open(args.out / "cache_read.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        w.writerows(rows)
    print(f"\nwritten: {args.out / 'cache_read.json'}, {args.out / 'cache_read.csv'}")


def print_table(rows: list[dict], args) -> None:
    print(f"\n{args.items} audio items (25-75 x {AUDIO_DIM}) + {args.items} images ({POSITIONS} x {IMAGE_DIM}); "
          f"batch = {BATCH_AUDIO} audio + {BATCH_IMAGES} images; ratios are speed ratios (>1 = faster)")
    print(f"| mode | path | ms/batch | items/s | x(a) | x(e) |\n|---|---|---|---|---|---|")
    for r in rows:
        if "ms_per_batch" in r:
            print(f"| {r['mode']} | ({r['path']}) {r['what']} | {r['ms_per_batch']:.1f} | {r['items_per_s']} "
                  f"| {r['x_vs_a']:.2f} | {r['x_vs_e']:.2f} |")
    print("\n| mode | whole-store load | seconds | GB/s |\n|---|---|---|---|")
    for r in rows:
        if "GB_per_s" in r:
            print(f"| {r['mode']} | {r['what']} | {r.get('seconds', float('nan')):.2f} | {r['GB_per_s']:.2f} |")


if __name__ == "__main__":
    main()
