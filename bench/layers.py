"""What a layer axis costs: loading a layered store whole or one layer, and the weighted sum's training step.

    .venv/bin/python bench/layers.py [--items 300] [--layers 13] [--dim 768] [--repeats 3]

Builds, in a temporary folder, an audio store of `--items` items (25-75 frames) with `--layers` hidden states of
`--dim` (WavLM base-plus: 13 × 768), then times (median of `--repeats`, after a first load that verifies and
records the checksums) `store.load()` (every layer) and `store.load(layer=7)` (one layer), with the resident
bytes of each; and one forward + backward pass of the audio head (width 256) on 128 items, reading one
layer against the learned weighted sum of all, in bf16 autocast and fp32, on one torch thread.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cache.store import open_store
import contextlib

from cache.hardware import describe_device
from tests.synthetic import synthetic_items, synthetic_provenance, write_synthetic_store
from train.model import TwoTower


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_device("cpu"), f"torch {torch.__version__}, 1 thread")
    rng = np.random.default_rng(0)
    layers = tuple(range(args.layers))
    with tempfile.TemporaryDirectory() as tmp:
        features = [rng.standard_normal((int(rng.integers(25, 76)), args.layers, args.dim)).astype(np.float16)
                    for _ in range(args.items)]
        path = write_synthetic_store(Path(tmp) / "audio-en.bench.h5", "audio", synthetic_items(args.items), features,
                                     provenance=synthetic_provenance("audio", args.dim).replace(layers=layers))
        del features
        store = open_store(path)
        print(f"store: {len(store)} items, {store.total_frames} frames x {args.layers} layers x {args.dim}, "
              f"{store.nbytes / 1e6:.0f} MB of float16")
        store.load()  # verify on first use: later loads skip the checksum pass
        layer = layers[len(layers) // 2]
        for name, kwargs in [("load() every layer", {}), (f"load(layer={layer})", {"layer": layer})]:
            mem = store.load(**kwargs)
            seconds = median_seconds(lambda: store.load(**kwargs), args.repeats)
            print(f"{name}: {seconds:.2f} s, resident {mem.nbytes / 1e6:.0f} MB")
            del mem

        batch = torch.arange(128)
        for precision in ("bf16", "fp32"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            results = {}
            for label, weighted in (("one layer", False), ("weighted sum", True)):
                mem = store.load(dtype=dtype) if weighted else store.load(dtype=dtype, layer=layer)
                x, pad = mem.gather(batch)
                torch.manual_seed(0)
                model = TwoTower(args.dim, 64, 256, audio_layers=args.layers if weighted else 0)

                def step() -> None:
                    model.zero_grad(set_to_none=True)
                    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                                else contextlib.nullcontext())
                    with autocast:
                        loss = model.embed_audio(x, pad).sum()
                    loss.backward()

                step()
                results[label] = median_seconds(step, args.repeats)
                del mem
            print(f"{precision}: audio head forward+backward, 128 items x {x.shape[1]} frames: "
                  + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in results.items()))


if __name__ == "__main__":
    main()
