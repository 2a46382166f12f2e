"""Extraction throughput of ``extract_store`` against the encoder's bare forward time on the same items.

    python bench/extract_speed.py                       # synthetic corpus, whisper-base + efficientnet-lite0
    python bench/extract_speed.py --corpus demo --items 200
    OMP_NUM_THREADS=1 python bench/extract_speed.py --modality image --items 32 --precision fp32 bf16

"bare" = ``encoder.encode`` over the same batches with every input already decoded in memory; "extract" =
the whole ``extract_store`` (plan, media reads and resampling, encode, journal commits, final packing into
the store). The target is extract / bare ≤ 1.2. The last lines estimate the time of a full corpus of
``--full-words`` words and ``--full-images`` pictures (the demo's size by default) from the measured rates.
With several ``--precision`` values each is timed, and the features of the first batch are compared with
those of the first precision (relative L2 difference; for scale, float16 storage rounding is also shown).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cache.hardware import PRECISIONS, machine_record  # noqa: E402
from extract.corpus import Corpus, load_corpus, resolve_corpus  # noqa: E402
from extract.encoders.registry import load_encoder  # noqa: E402
from extract.demo.build import items_per_concept  # noqa: E402
from extract.demo.concepts import CONCEPTS, LANGUAGES  # noqa: E402
from extract.run import batches, extract_store, plan_items, reader_for  # noqa: E402

DEMO_WORDS = len(CONCEPTS) * len(LANGUAGES) * items_per_concept(1.0)[0]  # 3,840 at --scale 1
DEMO_IMAGES = len(CONCEPTS) * items_per_concept(1.0)[1]  # 1,920


def subset(corpus: Corpus, modality: str, lang: str | None, n: int) -> Corpus:
    """The corpus restricted to n items of one modality (spread over the plan: every k-th item)."""
    items, _ = plan_items(corpus, modality, lang)
    step = max(1, len(items) // n)
    keep = {item.id for item in items[::step][:n]}
    if modality == "audio":
        return dataclasses.replace(corpus, audio=tuple(a for a in corpus.audio if a.id in keep))
    return dataclasses.replace(corpus, images=tuple(i for i in corpus.images if i.id in keep))


def bench_one(corpus: Corpus, modality: str, lang: str | None, encoder_name: str, batch_size: int,
              models_dir: Path, workdir: Path, precision: str) -> dict:
    encoder = load_encoder(encoder_name, modality=modality, device="cpu", models_dir=models_dir, precision=precision)
    plan, headers = plan_items(corpus, modality, lang)
    read = reader_for(modality, encoder)
    grid = list(batches(plan, batch_size, {item.id for item in plan}))
    inputs = [[read(item) for item in batch] for batch in grid]
    first = encoder.encode(inputs[0])  # also the warm-up: first-call allocations, lazy initialisation
    start = time.perf_counter()
    for batch in inputs:
        encoder.encode(batch)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    extract_store(corpus, modality, lang, encoder, workdir / f"{modality}-{encoder_name}-{encoder.precision}",
                  batch_size=batch_size, progress=False)
    full = time.perf_counter() - start
    seconds = sum(h.seconds for h in headers.values())
    return {"items": len(plan), "bare_s": bare, "extract_s": full, "audio_s": seconds,
            "precision": encoder.precision, "features": np.concatenate(first)}


def relative_l2(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.linalg.norm(other - reference) / np.linalg.norm(reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=None, help="corpus name or path (default: a synthetic corpus)")
    parser.add_argument("--lang", default=None, help="audio language (default: the corpus's first)")
    parser.add_argument("--items", type=int, default=96, help="items per modality")
    parser.add_argument("--batch-size", type=int, default=16, help="items per forward pass")
    parser.add_argument("--audio-encoder", default="whisper-base", help="audio encoder name or folder")
    parser.add_argument("--image-encoder", default="efficientnet-lite0", help="image encoder name or folder")
    parser.add_argument("--modality", choices=("audio", "image", "both"), default="both", help="what to time")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["auto"],
                        help="encoder precision(s) to time; with several, features are compared with the first's")
    parser.add_argument("--full-words", type=int, default=DEMO_WORDS, help="words of the corpus to estimate")
    parser.add_argument("--full-images", type=int, default=DEMO_IMAGES, help="pictures of the corpus to estimate")
    args = parser.parse_args()
    print(f"machine: {machine_record('cpu')}", flush=True)
    modalities = ("audio", "image") if args.modality == "both" else (args.modality,)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.corpus is None:
            from tests.extract.corpus_fixtures import write_tiny_corpus

            per_split = max(1, args.items // 13)  # 5 familiar concepts × 3 splits + 3 novel × test
            root = write_tiny_corpus(workdir / "synthetic", langs=("en",), familiar=5, novel=3,
                                     tokens_per_split=per_split, images_per_split=per_split, image_size=256)
        else:
            root = resolve_corpus(args.corpus)
        corpus = load_corpus(root)
        lang = args.lang or corpus.languages[0]
        rates: dict[tuple[str, str], float] = {}
        for modality in modalities:
            name = args.audio_encoder if modality == "audio" else args.image_encoder
            part = subset(corpus, modality, lang, args.items)
            reference = None
            for precision in args.precision:
                r = bench_one(part, modality, lang, name, args.batch_size, workdir / "models", workdir, precision)
                rates[(modality, precision)] = r["items"] / r["extract_s"]
                extra = f", {r['audio_s'] / r['items']:.2f} s of audio per word" if modality == "audio" else ""
                print(f"{name:18s} {modality} {precision} (runs {r['precision']}): {r['items']} items{extra}, "
                      f"batch {args.batch_size}\n"
                      f"  bare forward {r['items'] / r['bare_s']:7.1f} items/s   extract_store "
                      f"{rates[(modality, precision)]:7.1f} items/s   ratio extract/bare = "
                      f"{r['extract_s'] / r['bare_s']:.2f}", flush=True)
                if reference is None:
                    reference = r["features"]
                    print(f"  float16 storage rounding: relative L2 "
                          f"{relative_l2(reference, reference.astype(np.float16).astype(np.float32)):.2e}")
                else:
                    print(f"  features vs {args.precision[0]}: relative L2 {relative_l2(reference, r['features']):.2e}")
        if len(modalities) == 2:
            for precision in args.precision:
                estimate = (args.full_words / rates[("audio", precision)]
                            + args.full_images / rates[("image", precision)])
                print(f"estimate for {args.full_words} words + {args.full_images} pictures at the {precision} "
                      f"rates: {estimate / 60:.1f} min")


if __name__ == "__main__":
    main()
