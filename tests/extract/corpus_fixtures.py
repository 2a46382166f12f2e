"""Tiny, valid, deterministic corpora for tests: synthetic tones as words, small PNGs as pictures.

Import it from any test as ``from tests.extract.corpus_fixtures import write_tiny_corpus``.

``python -m tests.extract.corpus_fixtures --bench DIR`` builds a 6,000-row corpus in DIR and times
loading it (with media checks) and hashing its manifest: the figures quoted in docs/corpus-format.md.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

# The spec's concepts and demo words (en, fr, nl); other language codes get made-up words.
FAMILIAR = {
    "dog": ("dog", "chien", "hond"), "boat": ("boat", "bateau", "boot"), "cow": ("cow", "vache", "koe"),
    "bear": ("bear", "ours", "beer"), "horse": ("horse", "cheval", "paard"),
    "scissors": ("scissors", "ciseaux", "schaar"), "umbrella": ("umbrella", "parapluie", "paraplu"),
    "car": ("car", "voiture", "auto"), "bird": ("bird", "oiseau", "vogel"), "clock": ("clock", "horloge", "klok"),
    "elephant": ("elephant", "éléphant", "olifant"), "cat": ("cat", "chat", "kat"),
    "sheep": ("sheep", "mouton", "schaap"),
}
NOVEL = {
    "ball": ("ball", "ballon", "bal"), "cake": ("cake", "gâteau", "taart"),
    "trumpet": ("trumpet", "trompette", "trompet"), "lamp": ("lamp", "lampe", "lamp"),
    "bench": ("bench", "banc", "bank"), "cannon": ("cannon", "canon", "kanon"),
    "piano": ("piano", "piano", "piano"), "barrel": ("barrel", "tonneau", "ton"),
    "camera": ("camera", "appareil photo", "camera"), "fan": ("fan", "ventilateur", "ventilator"),
    "revolver": ("revolver", "revolver", "revolver"), "buck": ("buck", "cerf", "hert"),
    "toilet": ("toilet", "toilettes", "wc"), "butterfly": ("butterfly", "papillon", "vlinder"),
    "cup": ("cup", "tasse", "kopje"), "guitar": ("guitar", "guitare", "gitaar"),
    "fork": ("fork", "fourchette", "vork"), "bus": ("bus", "bus", "bus"), "chair": ("chair", "chaise", "stoel"),
}
WORD_INDEX = {"en": 0, "fr": 1, "nl": 2}
IMAGE_SOURCES = ("drawn-a", "drawn-b")
SPEAKERS_PER_LANG = 2
CONCEPT_COLUMNS = ("concept", "kind")
AUDIO_COLUMNS = ("id", "lang", "concept", "path", "start", "end", "speaker", "source", "split")
IMAGE_COLUMNS = ("id", "concept", "path", "source", "split")


def write_tiny_corpus(root: Path, langs: Sequence[str] = ("en", "fr"), familiar: int = 3, novel: int = 2,
                      tokens_per_split: Mapping[str, int] | int = {"train": 4, "valid": 2, "test": 2},
                      images_per_split: Mapping[str, int] | int = {"train": 3, "valid": 2, "test": 2},
                      sample_rate: int = 16000, lang_sample_rates: Mapping[str, int] | None = None,
                      seed: int = 0, image_size: int = 32) -> Path:
    """Write a valid corpus into ``root`` (created) and return ``root``.

    - concepts: the first ``familiar`` familiar and ``novel`` novel concepts of the spec, one word
      column per language of ``langs``;
    - audio, per language and concept: ``tokens_per_split[split]`` tokens per split (novel concepts:
      test only), alternating whole-file words (0.3-0.6 s tones with noise) and words cut by
      ``start``/``end`` out of a 1 s "utterance" file; two speakers per language, one source
      ``synth-<lang>``; files at ``sample_rate`` Hz, or ``lang_sample_rates[lang]`` (e.g.
      ``{"fr": 22050}`` to make extraction resample one language);
    - images: ``images_per_split[split]`` PNGs per split and concept, alternating two sources;
      train/valid show the shape on a coloured background, test on white.
    Same arguments, same bytes (``seed`` drives every random choice).
    """
    if familiar > len(FAMILIAR) or novel > len(NOVEL):
        raise ValueError(f"at most {len(FAMILIAR)} familiar and {len(NOVEL)} novel concepts")
    tokens = _per_split(tokens_per_split)
    pictures = _per_split(images_per_split)
    rates = {lang: (lang_sample_rates or {}).get(lang, sample_rate) for lang in langs}
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)

    concepts = [(name, "familiar", words) for name, words in list(FAMILIAR.items())[:familiar]]
    concepts += [(name, "novel", words) for name, words in list(NOVEL.items())[:novel]]
    write_rows(root / "concepts.csv", [
        {"concept": name, "kind": kind, **{lang: _word(words, name, lang) for lang in langs}}
        for name, kind, words in concepts], [*CONCEPT_COLUMNS, *langs])

    audio_rows = []
    for li, lang in enumerate(langs):
        for ci, (name, kind, _) in enumerate(concepts):
            for split in ("train", "valid", "test"):
                if kind == "novel" and split != "test":
                    continue
                for k in range(tokens[split]):
                    item_id = f"{lang}-{name}-{split}-{k}"
                    path = f"audio/{item_id}.wav"
                    word = _tone(rng, rates[lang], freq=220.0 * (1 + ci) * (1 + 0.1 * li))
                    start = end = ""
                    if k % 2:  # cut out of a longer utterance, as forced-aligned corpora are
                        onset = round(0.2 * rates[lang])
                        utterance = 0.01 * rng.standard_normal(rates[lang]).astype(np.float32)
                        utterance[onset:onset + len(word)] += word
                        start, end = f"{onset / rates[lang]:.6f}", f"{(onset + len(word)) / rates[lang]:.6f}"
                        word = utterance
                    soundfile.write(root / path, word, rates[lang], subtype="PCM_16")
                    audio_rows.append({"id": item_id, "lang": lang, "concept": name, "path": path,
                                       "start": start, "end": end,
                                       "speaker": f"{lang}-spk{k % SPEAKERS_PER_LANG}",
                                       "source": f"synth-{lang}", "split": split})
    write_rows(root / "audio.csv", audio_rows, AUDIO_COLUMNS)

    image_rows = []
    for ci, (name, kind, _) in enumerate(concepts):
        for split in ("train", "valid", "test"):
            if kind == "novel" and split != "test":
                continue
            for k in range(pictures[split]):
                item_id = f"img-{name}-{split}-{k}"
                path = f"images/{item_id}.png"
                _picture(rng, ci, on_white=split == "test", size=image_size).save(root / path)
                image_rows.append({"id": item_id, "concept": name, "path": path,
                                   "source": IMAGE_SOURCES[k % len(IMAGE_SOURCES)], "split": split})
    write_rows(root / "images.csv", image_rows, IMAGE_COLUMNS)
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a corpus table, as dicts (to edit a table in a test)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    """Write a corpus table (header ``columns``; missing cells empty)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)


def _per_split(counts: Mapping[str, int] | int) -> dict[str, int]:
    if isinstance(counts, int):
        return {split: counts for split in ("train", "valid", "test")}
    return {split: int(counts.get(split, 0)) for split in ("train", "valid", "test")}


def _word(words: tuple[str, str, str], concept: str, lang: str) -> str:
    return words[WORD_INDEX[lang]] if lang in WORD_INDEX else f"{concept}-{lang}"


def _tone(rng: np.random.Generator, rate: int, freq: float) -> np.ndarray:
    """A 0.3-0.6 s tone with a little noise and a smooth envelope: a stand-in for a spoken word."""
    n = int(rate * rng.uniform(0.3, 0.6))
    t = np.arange(n) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(n) + 0.02 * rng.standard_normal(n)
    return wave.astype(np.float32)


def _picture(rng: np.random.Generator, concept_index: int, on_white: bool, size: int) -> Image.Image:
    """A shape whose colour and form depend on the concept, at a random place and scale."""
    background = (255, 255, 255) if on_white else tuple(int(v) for v in rng.integers(0, 200, 3))
    image = Image.new("RGB", (size, size), background)
    colour = ((60 * concept_index) % 256, (110 + 40 * concept_index) % 256, (200 - 30 * concept_index) % 256)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(image)
    (draw.ellipse, draw.rectangle, draw.pieslice)[concept_index % 3](
        box, fill=colour, **({"start": 30, "end": 330} if concept_index % 3 == 2 else {}))
    return image


def _bench(folder: Path) -> dict[str, float]:
    """Build (once) a corpus of about 6,000 rows and time loading it and hashing its manifest."""
    import time

    from extract.corpus import load_corpus

    if not (folder / "images.csv").is_file():
        write_tiny_corpus(folder, langs=("en", "fr", "nl"), familiar=13, novel=19,
                          tokens_per_split={"train": 80, "valid": 20, "test": 20},
                          images_per_split={"train": 8, "valid": 2, "test": 4})
    t0 = time.perf_counter()
    corpus = load_corpus(folder)
    t1 = time.perf_counter()
    corpus.manifest_hash()
    t2 = time.perf_counter()
    corpus.manifest_hash()
    t3 = time.perf_counter()
    media = {a.path for a in corpus.audio} | {i.path for i in corpus.images}
    return {"rows": len(corpus.concepts) + len(corpus.audio) + len(corpus.images),
            "media_files": len(media), "media_mb": round(sum(p.stat().st_size for p in media) / 1e6, 1),
            "load_s": round(t1 - t0, 3), "manifest_hash_first_s": round(t2 - t1, 3),
            "manifest_hash_cached_s": round(t3 - t2, 3)}


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Time load_corpus and manifest_hash on a ~6,000-row corpus.")
    parser.add_argument("--bench", type=Path, required=True, help="folder for the benchmark corpus (built once)")
    print(json.dumps(_bench(parser.parse_args().bench)))
