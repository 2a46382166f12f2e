"""Extraction throughput of ``extract_store`` against the encoder's bare forward time on the same items.

    python bench/extract_speed.py                       # synthetic corpus, whisper-base + efficientnet-lite0
    python bench/extract_speed.py --corpus demo --items 200

"bare" = ``encoder.encode`` over the same batches with every input already decoded in memory; "extract" =
the whole ``extract_store`` (plan, media reads and resampling, encode, journal commits, final packing into
the store). The target is extract / bare ≤ 1.2. The last lines estimate the time of a full corpus of
``--full-words`` words and ``--full-images`` pictures (the demo's size by default) from the measured rates.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from extract.corpus import Corpus, load_corpus, resolve_corpus  # noqa: E402
from extract.encoders.registry import load_encoder  # noqa: E402
from extract.run import batches, extract_store, plan_items, reader_for  # noqa: E402


def subset(corpus: Corpus, modality: str, lang: str | None, n: int) -> Corpus:
    """The corpus restricted to n items of one modality (spread over the plan: every k-th item)."""
    items, _ = plan_items(corpus, modality, lang)
    step = max(1, len(items) // n)
    keep = {item.id for item in items[::step][:n]}
    if modality == "audio":
        return dataclasses.replace(corpus, audio=tuple(a for a in corpus.audio if a.id in keep))
    return dataclasses.replace(corpus, images=tuple(i for i in corpus.images if i.id in keep))


def bench_one(corpus: Corpus, modality: str, lang: str | None, encoder_name: str, batch_size: int,
              models_dir: Path, workdir: Path) -> dict[str, float]:
    encoder = load_encoder(encoder_name, modality=modality, device="cpu", models_dir=models_dir)
    plan, headers = plan_items(corpus, modality, lang)
    read = reader_for(modality, encoder)
    grid = list(batches(plan, batch_size, {item.id for item in plan}))
    inputs = [[read(item) for item in batch] for batch in grid]
    encoder.encode(inputs[0])  # warm-up: first-call allocations, lazy initialisation
    start = time.perf_counter()
    for batch in inputs:
        encoder.encode(batch)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    extract_store(corpus, modality, lang, encoder, workdir / f"{modality}-{encoder_name}", batch_size=batch_size,
                  progress=False)
    full = time.perf_counter() - start
    seconds = sum(h.seconds for h in headers.values())
    return {"items": len(plan), "bare_s": bare, "extract_s": full, "audio_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=None, help="corpus name or path (default: a synthetic corpus)")
    parser.add_argument("--lang", default=None, help="audio language (default: the corpus's first)")
    parser.add_argument("--items", type=int, default=96, help="items per modality")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--audio-encoder", default="whisper-base")
    parser.add_argument("--image-encoder", default="efficientnet-lite0")
    parser.add_argument("--full-words", type=int, default=3960, help="words of the corpus to estimate")
    parser.add_argument("--full-images", type=int, default=1980, help="pictures of the corpus to estimate")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
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
        rates = {}
        for modality, name in (("audio", args.audio_encoder), ("image", args.image_encoder)):
            part = subset(corpus, modality, lang, args.items)
            r = bench_one(part, modality, lang, name, args.batch_size, workdir / "models", workdir)
            rates[modality] = r["items"] / r["extract_s"]
            extra = f", {r['audio_s'] / r['items']:.2f} s of audio per word" if modality == "audio" else ""
            print(f"{name:18s} {modality}: {r['items']} items{extra}, batch {args.batch_size}\n"
                  f"  bare forward {r['items'] / r['bare_s']:7.1f} items/s   extract_store "
                  f"{rates[modality]:7.1f} items/s   ratio extract/bare = {r['extract_s'] / r['bare_s']:.2f}",
                  flush=True)
        estimate = args.full_words / rates["audio"] + args.full_images / rates["image"]
        print(f"estimate for {args.full_words} words + {args.full_images} pictures at these rates: "
              f"{estimate / 60:.1f} min")


if __name__ == "__main__":
    main()
