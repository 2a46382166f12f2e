"""Build the demo corpus: plan every token and picture from the seed, make them in a process pool, write
the tables, the credits and the look-at-me files, validate, and only then mark the corpus complete.

Determinism: every random choice (voice, rate, pitch, style, distractor, a per-picture seed) is drawn in
the parent process from one `numpy.random.Generator` before any work is handed out, so the result does
not depend on the number of workers or their order. The media are byte-identical too: sox dithers
repeatably (`-R`), Piper runs without noise, PNGs are written without time stamps.

Completion: the corpus is built in `<out>.partial/` and renamed to `<out>` after `BUILD.json` (status
`complete`, the parameters) has been written into it. An interrupted build leaves only the `.partial`
folder; the next run with the same parameters resumes it (media files are written under temporary names
and renamed, so a file that exists is whole), with other parameters it starts that folder afresh.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from cache.atomic import write_bytes
from cache.clitools import progress_bar
from cache.hashing import sha256_file, sha256_json
from cache.vocab import SPLITS
from extract.corpus import load_corpus
from extract.demo import artwork, scenes, voices
from extract.demo.concepts import ARTWORK_BY_KEY, ARTWORK_SETS, CONCEPTS, FAMILIAR, LANGUAGES, NOVEL, VOICES, \
    Voice, voices_for

log = logging.getLogger(__name__)

BUILDER_VERSION = 1  # bump when a change to the builder changes its output for the same parameters
BASE_TOKENS = 40  # tokens per concept and language at --scale 1
BASE_IMAGES = 60  # images per concept at --scale 1
MIN_PER_CONCEPT = 3  # a familiar concept needs one item in each of train, valid and test
SPLIT_SHARE = {"valid": 0.2, "test": 0.2}  # familiar concepts; the rest is train; novel ones are all test
RATE_RANGE = (130, 210)  # espeak-ng words per minute (default 175)
PITCH_RANGE = (30, 70)  # espeak-ng pitch 0..99 (default 50)
BUILD_FILE = "BUILD.json"
PLAN_FILE = "PLAN.json"
ICON_CACHE = ".demo-icons"  # next to the corpus folder, shared by the builds made there


class DemoBuildError(ValueError):
    """The demo corpus cannot be built as asked (bad option, existing corpus with other parameters)."""


@dataclass(frozen=True)
class BuildParams:
    """What decides the corpus's content. Workers and --force do not: they change how, not what."""

    seed: int = 0
    scale: float = 1.0
    langs: tuple[str, ...] = LANGUAGES

    def to_json(self) -> dict:
        return {"builder_version": BUILDER_VERSION, "seed": self.seed, "scale": float(self.scale), "langs": list(self.langs)}


@dataclass(frozen=True)
class AudioToken:
    id: str
    lang: str
    concept: str
    word: str
    speaker: str
    split: str
    rate: int
    pitch: int

    @property
    def path(self) -> str:
        return f"audio/{self.lang}/{self.concept}/{self.id}.wav"


@dataclass(frozen=True)
class ImageSpec:
    id: str
    concept: str
    source: str
    split: str
    distractor: str  # concept of the distractor object, "" for none
    distractor_source: str
    seed: int  # seeds the picture's own generator (background, scale, position, rotation)

    @property
    def path(self) -> str:
        return f"images/{self.concept}/{self.id}.png"


@dataclass(frozen=True)
class BuildResult:
    root: Path
    built: bool  # False: a complete corpus with these parameters was already there
    seconds: float
    n_audio: int
    n_images: int


# ----------------------------------------------------------------------------------------------
# Planning


def items_per_concept(scale: float) -> tuple[int, int]:
    """(tokens per concept and language, images per concept) for a --scale."""
    return (max(MIN_PER_CONCEPT, round(BASE_TOKENS * scale)), max(MIN_PER_CONCEPT, round(BASE_IMAGES * scale)))


def split_sizes(n: int, kind: str) -> dict[str, int]:
    if kind == NOVEL:
        return {"test": n}
    sizes = {split: max(1, round(n * share)) for split, share in SPLIT_SHARE.items()}
    return {"train": n - sum(sizes.values()), **sizes}


def test_voice_count(n_voices: int) -> int:
    """How many of a language's voices speak a familiar concept's test tokens (never its train tokens)."""
    return max(1, math.ceil(n_voices / 3))


def plan_audio(params: BuildParams, rng: np.random.Generator) -> list[AudioToken]:
    """Every token: for a familiar concept, its test voices are held out of its train and valid splits.

    The held-out voices rotate over the concepts, so every voice speaks in every split of the corpus
    and no voice-and-settings combination is shared between a concept's train and test tokens.
    """
    n_tokens, _ = items_per_concept(params.scale)
    tokens: list[AudioToken] = []
    for lang in params.langs:
        speakers = [v.speaker for v in voices_for(lang)]
        n_v, k = len(speakers), test_voice_count(len(speakers))
        rotation = int(rng.integers(n_v))
        familiar_index = 0
        for concept in CONCEPTS:
            if concept.kind == FAMILIAR:
                start = rotation + familiar_index * k
                held_out = [speakers[(start + j) % n_v] for j in range(k)]
                pools = {"test": held_out, "train": [s for s in speakers if s not in held_out]}
                pools["valid"] = pools["train"]
                familiar_index += 1
            else:
                pools = {"test": speakers}
            number = 0
            for split, n in split_sizes(n_tokens, concept.kind).items():
                pool = pools[split]
                offset = int(rng.integers(len(pool)))
                for i in range(n):
                    tokens.append(AudioToken(
                        id=f"{lang}-{concept.name}-{number:03d}", lang=lang, concept=concept.name,
                        word=concept.words[lang], speaker=pool[(offset + i) % len(pool)], split=split,
                        rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))))
                    number += 1
    return tokens


def style_sequence(styles: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """`n` styles that cycle over the artists first and over each artist's styles second.

    Any k consecutive pictures of a concept therefore come from min(k, artists) different artists,
    so even a tiny corpus shows every concept in several artists' hands, and a big one uses every style.
    """
    by_artist: dict[str, list[str]] = defaultdict(list)
    for style in styles:
        by_artist[ARTWORK_BY_KEY[style].artist].append(style)
    groups = [by_artist[a] for a in sorted(by_artist)]
    groups = [[g[j] for j in rng.permutation(len(g))] for g in (groups[i] for i in rng.permutation(len(groups)))]
    offset = int(rng.integers(len(groups)))
    sequence = []
    for i in range(offset, offset + n):
        group = groups[i % len(groups)]
        sequence.append(group[(i // len(groups)) % len(group)])
    return sequence


def plan_images(params: BuildParams, styles: dict[str, list[str]], rng: np.random.Generator) -> list[ImageSpec]:
    """Every picture, with its style, distractor and seed.

    Distractors are familiar concepts only: a novel object must never be seen during training.
    """
    _, n_images = items_per_concept(params.scale)
    familiar = [c.name for c in CONCEPTS if c.kind == FAMILIAR]
    specs: list[ImageSpec] = []
    for concept in CONCEPTS:
        sequence = iter(style_sequence(styles[concept.name], n_images, rng))
        number = 0
        for split, n in split_sizes(n_images, concept.kind).items():
            for _ in range(n):
                distractor = distractor_source = ""
                if split != "test" and rng.random() < scenes.DISTRACTOR_P:
                    others = [c for c in familiar if c != concept.name]
                    distractor = others[int(rng.integers(len(others)))]
                    distractor_source = styles[distractor][int(rng.integers(len(styles[distractor])))]
                specs.append(ImageSpec(
                    id=f"img-{concept.name}-{number:03d}", concept=concept.name, source=next(sequence),
                    split=split, distractor=distractor, distractor_source=distractor_source,
                    seed=int(rng.integers(2**63 - 1))))
                number += 1
    return specs


# ----------------------------------------------------------------------------------------------
# Work done in the pool (module-level functions so that they pickle)


def icon_cache_dir(cache_root: Path, set_key: str) -> Path:
    """Where one set's rendered icons are kept: named by the set's version, the size and the icon names
    drawn from it, so that a new package version or a changed concept table renders afresh."""
    names = [(c.name, c.icon_name(set_key)) for c in CONCEPTS if set_key in artwork.allowed_sets(c)]
    digest = sha256_json(names)[:10]
    return cache_root / f"{set_key}-{artwork.set_version(set_key)}-{artwork.RENDER_SIZE}px-{digest}"


def _render_set_job(args: tuple[str, str]) -> tuple[str, list[str]]:
    """Rasterise one set's icons once into the icon cache (rendering is ~10 s of CPU for all sets, the
    fluent-emoji JSON alone is 99 MB), and say which concepts the set draws."""
    set_key, cache_root = args
    out = icon_cache_dir(Path(cache_root), set_key)
    done = out / "DONE.json"
    if not done.exists():
        out.mkdir(parents=True, exist_ok=True)
        drawn = artwork.render_set(set_key, CONCEPTS)
        for concept, png in drawn.items():
            write_bytes(out / f"{concept}.png", png)
        write_bytes(done, json.dumps(sorted(drawn)).encode())
    return set_key, json.loads(done.read_text())


def _audio_job(args: tuple[str, list[AudioToken]]) -> list[tuple[str, float]]:
    root, tokens = args
    by_speaker = {v.speaker: v for v in voices_for(tokens[0].lang)}
    durations = []
    for t in tokens:
        path = Path(root) / t.path
        if path.exists():
            durations.append((t.id, sf.info(path).duration))
        else:
            durations.append((t.id, voices.synthesise(by_speaker[t.speaker], t.word,
                                                      voices.SpeechSettings(t.rate, t.pitch), path)))
    return durations


_ICONS: dict[tuple[str, str], Image.Image] = {}


def _icon(cache_root: str, source: str, concept: str) -> Image.Image:
    key = (source, concept)
    if key not in _ICONS:
        path = icon_cache_dir(Path(cache_root), source) / f"{concept}.png"
        _ICONS[key] = Image.open(path).convert("RGBA")
    return _ICONS[key]


def _image_job(args: tuple[str, str, list[ImageSpec]]) -> int:
    root, icon_dir, specs = args
    for spec in specs:
        path = Path(root) / spec.path
        if path.exists():
            continue
        rng = np.random.default_rng(spec.seed)
        target = _icon(icon_dir, spec.source, spec.concept)
        if spec.split == "test":
            picture = scenes.compose_test(target, rng)
        else:
            distractor = _icon(icon_dir, spec.distractor_source, spec.distractor) if spec.distractor else None
            picture = scenes.compose_scene(target, rng, distractor)
        buf = io.BytesIO()
        picture.save(buf, format="PNG", optimize=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, buf.getvalue())
    return len(specs)


# ----------------------------------------------------------------------------------------------
# Tables and look-at-me files


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes(path, buf.getvalue().encode("utf-8"))


def write_tables(root: Path, params: BuildParams, tokens: list[AudioToken], specs: list[ImageSpec],
                 durations: dict[str, float], styles: dict[str, list[str]]) -> None:
    _write_csv(root / "concepts.csv", ["concept", "kind", *params.langs, "emoji", "styles", "artists", "note"],
               [[c.name, c.kind, *[c.words[lang] for lang in params.langs], c.emoji, " ".join(styles[c.name]),
                 " ".join(sorted({ARTWORK_BY_KEY[s].artist for s in styles[c.name]})), c.note] for c in CONCEPTS])
    engines = {v.speaker: v for v in voices_for_langs(params.langs)}
    _write_csv(root / "audio.csv",
               ["id", "lang", "concept", "path", "start", "end", "speaker", "source", "split",
                "word", "voice", "rate", "pitch", "duration"],
               [[t.id, t.lang, t.concept, t.path, "", "", t.speaker, engines[t.speaker].engine, t.split, t.word,
                 engines[t.speaker].espeak_voice or t.speaker, t.rate, t.pitch, f"{durations[t.id]:.3f}"]
                for t in tokens])
    _write_csv(root / "images.csv",
               ["id", "concept", "path", "source", "split", "artist", "distractor", "distractor_source"],
               [[s.id, s.concept, s.path, s.source, s.split, ARTWORK_BY_KEY[s.source].artist, s.distractor,
                 s.distractor_source] for s in specs])


def voices_for_langs(langs: tuple[str, ...]) -> list[Voice]:
    return [v for lang in langs for v in voices_for(lang)]


def write_audio_listing(root: Path, params: BuildParams, tokens: list[AudioToken], durations: dict[str, float]) -> None:
    """audio-listing.csv (one row per language, voice, concept and split) and audio-listing.md (per language:
    concepts x voices, tokens as train/valid/test), so a person can see who says what where."""
    counts: Counter = Counter((t.lang, t.speaker, t.concept, t.split) for t in tokens)
    secs: dict[tuple, list[float]] = defaultdict(list)
    examples: dict[tuple, str] = {}
    for t in tokens:
        secs[(t.lang, t.speaker, t.concept, t.split)].append(durations[t.id])
        examples.setdefault((t.lang, t.speaker, t.concept, t.split), t.path)
    rows = [[*key, counts[key], f"{np.mean(secs[key]):.3f}", examples[key]] for key in sorted(counts)]
    _write_csv(root / "audio-listing.csv", ["lang", "speaker", "concept", "split", "tokens", "mean_seconds",
                                             "example"], rows)
    lines = ["# Audio listing", "", "Tokens per concept and voice, as train/valid/test. A familiar concept's test "
             "voices never speak its train or valid tokens.", ""]
    for lang in params.langs:
        speakers = [v.speaker for v in voices_for(lang)]
        lines += [f"## {lang}", "", "| concept | word | " + " | ".join(speakers) + " |",
                  "|---|---|" + "---|" * len(speakers)]
        for c in CONCEPTS:
            cells = ["/".join(str(counts[(lang, s, c.name, split)]) for split in SPLITS)
                     for s in speakers]
            lines.append(f"| {c.name} ({c.kind}) | {c.words[lang]} | " + " | ".join(cells) + " |")
        lines.append("")
    write_bytes(root / "audio-listing.md", "\n".join(lines).encode("utf-8"))


def write_contact_sheet(root: Path, specs: list[ImageSpec], styles: dict[str, list[str]], cell: int = 72) -> None:
    """contact-sheet.png: a row per concept; a column per style showing one test picture (or, for a style
    with no test picture, a train one), then three train scenes."""
    set_keys = [s.key for s in ARTWORK_SETS]
    n_scenes, label_w, head_h = 3, 110, 40
    sheet = Image.new("RGB", (label_w + cell * (len(set_keys) + n_scenes), head_h + cell * len(CONCEPTS)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, key in enumerate(set_keys + ["scene"] * n_scenes):
        draw.multiline_text((label_w + j * cell + 2, 2), _wrap(key, cell // 6), fill="black", spacing=1)
    by_key: dict[tuple[str, str], ImageSpec] = {}
    for split in ("test", "valid", "train"):
        for s in specs:
            if s.split == split:
                by_key.setdefault((s.concept, s.source), s)
    for i, c in enumerate(CONCEPTS):
        y = head_h + i * cell
        draw.text((4, y + cell // 2 - 12), f"{c.name}\n({c.kind})", fill="black")
        pictures = [by_key.get((c.name, key)) for key in set_keys]
        pictures += [s for s in specs if s.concept == c.name and s.split == "train"][:n_scenes]
        for j, spec in enumerate(pictures):
            if spec is None:
                continue
            thumb = Image.open(root / spec.path).convert("RGB").resize((cell - 4, cell - 4), Image.LANCZOS)
            sheet.paste(thumb, (label_w + j * cell + 2, y + 2))
        draw.line((0, y, sheet.width, y), fill=(200, 200, 200))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes(root / "contact-sheet.png", buf.getvalue())


# ----------------------------------------------------------------------------------------------
# Licences, credits and the corpus README

CC_NOTICE = """The corpus's pictures drawn from the sets named above are licensed under the
Creative Commons {title} 4.0 International licence. The full legal code is at
{url}legalcode
(section 3(a)(1)(C) of the licence allows giving its address instead of a copy).
"""
MIT_TEXT = """MIT License

{copyright}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
APACHE_TEXT = Path("/usr/share/common-licenses/Apache-2.0")  # Debian's base-files ships it
MODIFIED = "modified: rasterised, scaled, flipped, rotated and composited on generated backgrounds"


def write_licences(root: Path, langs: tuple[str, ...], styles: dict[str, list[str]]) -> None:
    """LICENSES/ (one file per licence and per MBROLA voice) and CREDITS.md (who made what, under which terms)."""
    lic = root / "LICENSES"
    lic.mkdir(exist_ok=True)
    used_sets = [s for s in ARTWORK_SETS if any(s.key in v for v in styles.values())]
    spdx_used = sorted({s.licence for s in used_sets})
    for spdx in spdx_used:
        sets = [s for s in used_sets if s.licence == spdx]
        if spdx.startswith("CC-BY"):
            title = "Attribution-ShareAlike" if "SA" in spdx else "Attribution"
            text = CC_NOTICE.format(title=title, url=sets[0].licence_url)
        elif spdx == "MIT":
            text = MIT_TEXT.format(copyright=sets[0].copyright)
        else:
            text = APACHE_TEXT.read_text() if APACHE_TEXT.is_file() else f"See {sets[0].licence_url}\n"
        text = "Applies to the pictures of: " + ", ".join(s.key for s in sets) + "\n\n" + text
        write_bytes(lic / f"{spdx}.txt", text.encode())
    used_voices = voices_for_langs(langs)
    for v in used_voices:
        if v.engine == "mbrola":
            notice = Path(f"/usr/share/doc/mbrola-{v.mbrola_id}/copyright")
            write_bytes(lic / f"mbrola-{v.mbrola_id}.txt", notice.read_bytes() if notice.is_file() else
                          f"MBROLA voice {v.mbrola_id}: see https://github.com/mbrola/mbrola-voices\n".encode())
    lines = ["# Credits", "",
             "This corpus is distributed free of charge, for research. It must not be sold.", "",
             "## Pictures", "",
             "Every picture is derived from an emoji drawing (" + MODIFIED + "). "
             "The `source` column of images.csv names the set each picture comes from.", "",
             "| source | set | artist | copyright | licence | npm package |", "|---|---|---|---|---|---|"]
    for s in used_sets:
        lines.append(f"| {s.key} | {s.title} ({s.homepage}) | {s.artist} | {s.copyright} | "
                     f"[{s.licence}]({s.licence_url}) (LICENSES/{s.licence}.txt) | {s.package} {artwork.set_version(s.key)} |")
    share_alike = [s.key for s in used_sets if "SA" in s.licence]
    lines += ["", f"Pictures whose `source` or `distractor_source` (images.csv) is {' or '.join(share_alike)} are "
              "adaptations of CC BY-SA 4.0 works and are themselves licensed under CC BY-SA 4.0. The other pictures "
              "carry the licences of the sets they draw from. To cut a subset without share-alike terms, drop "
              "those rows.", "",
              "## Speech", "",
              "Every spoken word was synthesised offline (espeak-ng drives the MBROLA voices and its own formant "
              "voices; Piper runs the neural voice), then resampled, trimmed and padded with sox.", "",
              "| speaker | lang | engine | voice | terms |", "|---|---|---|---|---|"]
    for v in used_voices:
        if v.engine == "mbrola":
            terms = (f"MBROLA database {v.mbrola_id}, (c) its owners (LICENSES/mbrola-{v.mbrola_id}.txt); produced "
                     "with the MBROLA program; free of charge, not for sale")
        elif v.engine == "piper":
            terms = ("Piper voice en_US-joe-medium; its model card gives the dataset licence as CC0 and says the "
                     "model was fine-tuned from Piper's en_US lessac voice")
        else:
            terms = "espeak-ng (GPL-3.0 program); no terms attach to its output"
        lines.append(f"| {v.speaker} | {v.lang} | {v.engine} | {v.description} | {terms} |")
    lines += ["", "Tools: espeak-ng (GPL-3.0-or-later), MBROLA (AGPL-3.0), Piper / piper-tts (GPL-3.0-or-later), "
              "sox (GPL-2.0), resvg (MIT / Apache-2.0), Pillow (MIT-CMU), numpy (BSD-3-Clause). "
              "None of their terms attach to the data they produced.", ""]
    write_bytes(root / "CREDITS.md", "\n".join(lines).encode("utf-8"))


def write_readme(root: Path, params: BuildParams, tokens: list[AudioToken], specs: list[ImageSpec],
                 styles: dict[str, list[str]]) -> None:
    """The corpus's README: what is in it, how it was made, what was substituted. No times: it is deterministic."""
    n_tokens, n_images = items_per_concept(params.scale)
    per_split_audio = Counter(t.split for t in tokens)
    per_split_images = Counter(s.split for s in specs)
    lines = [
        "# vgsme demo corpus", "",
        f"Built offline by `vgsme-demo-corpus --seed {params.seed} --scale {params.scale} "
        f"--langs {','.join(params.langs)}` (builder version {BUILDER_VERSION}); the same command rebuilds it "
        "byte for byte. See docs/demo-corpus.md in the vgsme repository.", "",
        f"- {len(CONCEPTS)} concepts: {sum(c.kind == FAMILIAR for c in CONCEPTS)} familiar (train, valid, test) and "
        f"{sum(c.kind == NOVEL for c in CONCEPTS)} novel (test only).",
        f"- {len(tokens)} spoken words: {n_tokens} per concept and language ({', '.join(params.langs)}); "
        + ", ".join(f"{k} {per_split_audio[k]}" for k in SPLITS) + ". 16 kHz mono 16-bit WAV.",
        f"- {len(specs)} pictures: {n_images} per concept; "
        + ", ".join(f"{k} {per_split_images[k]}" for k in SPLITS) + ". 256x256 RGB PNG.",
        "- Tables: concepts.csv, audio.csv, images.csv (the vgsme corpus format, plus extra columns: "
        "audio.csv `word, voice, rate, pitch, duration`; images.csv `artist, distractor, distractor_source`).",
        "- To look at: contact-sheet.png (a row per concept: one test picture per style, then train scenes), "
        "audio-listing.md / audio-listing.csv (tokens per language, voice, concept and split).",
        "- Terms: CREDITS.md and LICENSES/. Free of charge, for research; not for sale.", "",
        "## Concepts, words and substitutions", "",
        "| concept | kind | " + " | ".join(params.langs) + " | emoji | styles | note |",
        "|---|---|" + "---|" * len(params.langs) + "---|---|---|"]
    for c in CONCEPTS:
        lines.append(f"| {c.name} | {c.kind} | " + " | ".join(c.words[lang] for lang in params.langs)
                     + f" | {c.emoji} | {len(styles[c.name])} | {c.note} |")
    lines += ["", "Substituted concepts (the spec's word list had them, no artwork set draws them): bench -> bed, "
              "cannon -> rocket. Words fixed to what the pictures show: fan (a hand fan: éventail / waaier), "
              "barrel (an oil drum: fr baril); lamp is an oil lamp, fork is drawn with a knife.", "",
              "## Speech", "",
              f"Each token is one word, spoken at a random rate (espeak-ng `-s` {RATE_RANGE[0]}-{RATE_RANGE[1]} words "
              f"per minute) and pitch (`-p` {PITCH_RANGE[0]}-{PITCH_RANGE[1]}); audio.csv records the speaker, the "
              "synthesiser voice and both settings for every token. Recorded-speaker voices (MBROLA diphones, "
              "the Piper neural voice) come first; espeak-ng formant voices only fill Dutch up to four voices. "
              "For every familiar concept and language about a third of the voices are held out: they speak "
              "its test tokens and none of its train or valid tokens (the held-out voices rotate over the "
              "concepts, so each voice is heard in training). Novel concepts are spoken by all voices.", "",
              "| lang | speaker | engine | gender | tokens |", "|---|---|---|---|---|"]
    per_speaker = Counter((t.lang, t.speaker) for t in tokens)
    for v in VOICES:
        if v.lang in params.langs:
            lines.append(f"| {v.lang} | {v.speaker} | {v.engine} | {v.gender} | {per_speaker[(v.lang, v.speaker)]} |")
    lines += ["", "## Pictures", "",
              "Each picture's `source` is the artwork set (style) it is drawn from, so test episodes can pair "
              "pictures of one source. Train and valid pictures are scenes: the object at a random size "
              "(40-75 % of the frame), position and rotation (+-25 degrees), flipped or not, on a solid, gradient, "
              f"smooth-noise or cluttered background; with probability {scenes.DISTRACTOR_P} a smaller object of "
              "another *familiar* concept stands beside it (novel objects are never shown in training). "
              "Test pictures show the object alone on white (like the paper's masked test images), 55-85 % of "
              "the frame, at a random position, flip and rotation (+-15 degrees); no two are identical.", "",
              "| source | artist | licence | concepts drawn |", "|---|---|---|---|"]
    for s in ARTWORK_SETS:
        drawn = [c for c in CONCEPTS if s.key in styles[c.name]]
        lines.append(f"| {s.key} | {s.artist} | {s.licence} | {len(drawn)} |")
    write_bytes(root / "README.md", "\n".join(lines + [""]).encode("utf-8"))


def _wrap(label: str, width: int) -> str:
    """Break a set name at its hyphens into lines of at most `width` characters (a contact-sheet header)."""
    lines = [""]
    for part in label.replace(" ", "-").split("-"):
        joined = f"{lines[-1]}-{part}" if lines[-1] else part
        if len(joined) <= width or not lines[-1]:
            lines[-1] = joined
        else:
            lines.append(part)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The build


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: Path, params: BuildParams | None = None) -> bool:
    """A corpus is complete when its BUILD.json says so (and, if given, names these parameters)."""
    build = _read_json(root / BUILD_FILE)
    return bool(build and build.get("status") == "complete"
                and (params is None or build.get("params") == params.to_json()))


def check_params(params: BuildParams) -> None:
    bad_langs = [lang for lang in params.langs if lang not in LANGUAGES]
    if bad_langs or not params.langs or len(set(params.langs)) != len(params.langs):
        raise DemoBuildError(f"--langs {','.join(params.langs)}: choose distinct languages among {', '.join(LANGUAGES)}")
    if not (params.scale > 0 and math.isfinite(params.scale)):
        raise DemoBuildError(f"--scale {params.scale}: give a positive number (1 = {BASE_TOKENS} tokens per concept "
                             f"and language, {BASE_IMAGES} images per concept)")


def build_demo_corpus(out: Path, params: BuildParams = BuildParams(), workers: int = 2, force: bool = False,
                      progress: bool = True) -> BuildResult:
    """Build the demo corpus at `out` (see the module docstring); a complete one with the same parameters is kept.

    Rendered icons are kept in `.demo-icons/` next to `out` for the next build.
    """
    t0 = time.monotonic()
    out = Path(out)
    check_params(params)
    if is_complete(out):
        if is_complete(out, params) and not force:
            build = _read_json(out / BUILD_FILE)
            return BuildResult(out, False, 0.0, build["n_audio"], build["n_images"])
        if not force:
            raise DemoBuildError(
                f"{out} already holds a complete demo corpus built with {_read_json(out / BUILD_FILE)['params']}, "
                f"not {params.to_json()}: pass --force to rebuild it, or --out another folder")
    elif out.exists() and any(out.iterdir()) and not force:
        # Builds happen in <out>.partial, so a non-empty <out> without a complete BUILD.json is not ours.
        raise DemoBuildError(f"{out} exists and is not a complete demo corpus (no BUILD.json with status complete): "
                             "pass --force to replace it, or --out another folder")
    voices.check_speech_tools(voices_for_langs(params.langs))
    artwork.check_artwork([s.key for s in ARTWORK_SETS])

    partial = out.with_name(out.name + ".partial")
    if partial.exists() and _read_json(partial / PLAN_FILE) != params.to_json():
        log.info("discarding %s: it was started with other (or unknown) parameters", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / BUILD_FILE).unlink(missing_ok=True)
    for stray in partial.rglob(".*.tmp"):  # half-written files of a killed run
        stray.unlink()
    write_bytes(partial / PLAN_FILE, json.dumps(params.to_json(), indent=1).encode())
    icon_dir = out.parent / ICON_CACHE

    ctx = multiprocessing.get_context("spawn")  # no inherited threads or locks (tqdm's monitor, onnxruntime)
    with ctx.Pool(max(1, workers)) as pool:
        rendered = dict(pool.imap_unordered(_render_set_job, [(s.key, str(icon_dir)) for s in ARTWORK_SETS]))
        styles = {c.name: [s.key for s in ARTWORK_SETS if c.name in rendered[s.key]] for c in CONCEPTS}
        log.info("drew %d icons from %d sets in %.1f s", sum(map(len, rendered.values())), len(rendered),
                 time.monotonic() - t0)
        rng = np.random.default_rng(params.seed)
        tokens = plan_audio(params, rng)
        specs = plan_images(params, styles, rng)

        audio_jobs = defaultdict(list)
        for t in tokens:
            audio_jobs[(t.lang, t.concept)].append(t)
        image_jobs = defaultdict(list)
        for s in specs:
            image_jobs[s.concept].append(s)
        durations: dict[str, float] = {}
        bar = progress_bar(progress, total=len(tokens) + len(specs), desc="demo corpus", unit="item")
        # Pictures first: they are quicker, so the bar moves; both kinds share the pool.
        image_results = pool.imap_unordered(_image_job, [(str(partial), str(icon_dir), job)
                                                         for job in image_jobs.values()])
        audio_results = pool.imap_unordered(_audio_job, [(str(partial), job) for job in audio_jobs.values()])
        for n in image_results:
            bar.update(n)
        for done in audio_results:
            durations.update(done)
            bar.update(len(done))
        bar.close()
        log.info("made %d tokens and %d pictures at %.1f s", len(tokens), len(specs), time.monotonic() - t0)

    write_tables(partial, params, tokens, specs, durations, styles)
    write_audio_listing(partial, params, tokens, durations)
    write_contact_sheet(partial, specs, styles)
    write_licences(partial, params.langs, styles)
    write_readme(partial, params, tokens, specs, styles)
    _validate(partial)
    log.info("wrote tables, listings, credits and validated at %.1f s", time.monotonic() - t0)

    seconds = time.monotonic() - t0
    build = {"status": "complete", "params": params.to_json(), "n_audio": len(tokens), "n_images": len(specs),
             "seconds": round(seconds, 1), "workers": workers}
    write_bytes(partial / BUILD_FILE, json.dumps(build, indent=1).encode())
    (partial / PLAN_FILE).unlink()
    _replace_dir(partial, out)
    return BuildResult(out, True, seconds, len(tokens), len(specs))


def _validate(root: Path) -> None:
    """The corpus loader is the judge: a builder bug must fail here, not in extract-features."""
    corpus = load_corpus(root)
    digests = Counter(sha256_file(i.path) for i in corpus.images if i.split == "test")
    dupes = [d for d, n in digests.items() if n > 1]
    if dupes:
        raise DemoBuildError(f"{len(dupes)} test pictures are duplicates: change --seed (this should not happen)")


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`; an old `target` is moved aside first and deleted after the swap."""
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old)


