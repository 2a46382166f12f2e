"""The corpus format: three CSV tables and the media they point at, loaded into frozen dataclasses.

A corpus is a folder holding
  - ``concepts.csv``: ``concept, kind`` (familiar|novel), then one word column per language code
    (``en, fr, nl``, ...), optionally followed by free columns such as ``note``;
  - ``audio.csv``: ``id, lang, concept, path, start, end, speaker, source, split``;
  - ``images.csv``: ``id, concept, path, source, split``.
``docs/corpus-format.md`` describes the format, every validation rule and how to build a corpus from
the paper's datasets.

Everything that reads a corpus goes through :func:`load_corpus`, so a bad corpus is refused in one
place, with one message listing every bad row (a researcher fixing a 6,000-row table wants all the
problems at once, not one per run). Later stages never read the corpus: they read the feature stores,
which record :meth:`Corpus.manifest_hash` so that a changed corpus is never mistaken for the old one.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import soundfile

from cache.hashing import sha256_file
from cache.vocab import KINDS, SPLITS
from extract.wavheader import wav_truncation

CONCEPTS_FILE = "concepts.csv"
AUDIO_FILE = "audio.csv"
IMAGES_FILE = "images.csv"
CONCEPT_COLUMNS = ("concept", "kind")
AUDIO_COLUMNS = ("id", "lang", "concept", "path", "start", "end", "speaker", "source", "split")
IMAGE_COLUMNS = ("id", "concept", "path", "source", "split")
AUDIO_REQUIRED = ("id", "lang", "concept", "path", "speaker", "source", "split")
IMAGE_REQUIRED = IMAGE_COLUMNS
# A word column is named by a language code: ISO 639-1/639-3 letters with an optional region or
# script subtag (en, nld, pt-BR, zh_Hans). Any other column of concepts.csv (note, source, ...) is free text.
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
# Forced-alignment times are rounded (MFA writes milliseconds), so an end a hair past the file's last
# sample is rounding, not an error; readers clamp it to the file.
DURATION_TOLERANCE_S = 0.005
DEMO_HINT = "build the offline demo corpus with `vgsme-demo-corpus`"


class CorpusError(ValueError):
    """A corpus that cannot be used; ``problems`` holds every bad row, the message lists them all."""

    def __init__(self, root: Path, problems: Sequence[Problem]):
        self.root = root
        self.problems = tuple(problems)
        lines = [f"corpus {root} has {len(self.problems)} problem(s):"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class MediaError(ValueError):
    """A media file of one item that cannot be read as needed (missing, corrupt, empty, too short)."""

    def __init__(self, item_id: str, path: Path | str, reason: str, fix: str):
        self.item_id, self.path, self.reason, self.fix = item_id, Path(path), reason, fix
        super().__init__(f"item {item_id!r} ({path}): {reason}; fix: {fix}")


@dataclass(frozen=True)
class Problem:
    """One bad row (or header, or missing table): where it is, what is wrong, how to fix it."""

    file: str
    line: int | None
    reason: str
    fix: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file} line {self.line}"
        return f"{where}: {self.reason}; fix: {self.fix}"


@dataclass(frozen=True)
class Concept:
    """A concept, whether the models see it in training (familiar) or only at test (novel), and its words."""

    name: str
    kind: str
    words: dict[str, str]

    def __hash__(self) -> int:  # words is a dict; hash what identifies the concept
        return hash((self.name, self.kind, tuple(sorted(self.words.items()))))


@dataclass(frozen=True)
class AudioItem:
    """A spoken word: a whole file, or the ``[start, end)`` seconds of a longer utterance."""

    id: str
    lang: str
    concept: str
    path: Path
    start: float | None
    end: float | None
    speaker: str
    source: str
    split: str


@dataclass(frozen=True)
class ImageItem:
    """A picture of one concept; ``source`` is the dataset or artwork style it comes from."""

    id: str
    concept: str
    path: Path
    source: str
    split: str


@dataclass(frozen=True)
class Corpus:
    """A validated corpus: its concepts, spoken words and pictures, in the tables' row order."""

    root: Path
    name: str
    concepts: tuple[Concept, ...]
    audio: tuple[AudioItem, ...]
    images: tuple[ImageItem, ...]
    languages: tuple[str, ...]

    @cached_property
    def _concepts_by_name(self) -> dict[str, Concept]:
        return {c.name: c for c in self.concepts}

    def concept(self, name: str) -> Concept:
        """The concept called ``name`` (KeyError naming the known ones otherwise)."""
        try:
            return self._concepts_by_name[name]
        except KeyError:
            raise KeyError(f"no concept {name!r} in corpus {self.name}; known: {sorted(self._concepts_by_name)}") from None

    def kind_of(self, concept: str) -> str:
        """``familiar`` or ``novel``."""
        return self.concept(concept).kind

    def concept_names(self, kind: str | None = None) -> tuple[str, ...]:
        """Concept names in table order, optionally only those of one kind."""
        return tuple(c.name for c in self.concepts if kind is None or c.kind == kind)

    def audio_of(self, lang: str, split: str | None = None) -> tuple[AudioItem, ...]:
        """The audio items of one language (optionally one split), in table order."""
        return tuple(a for a in self.audio if a.lang == lang and (split is None or a.split == split))

    def images_of(self, split: str | None = None) -> tuple[ImageItem, ...]:
        """The image items (optionally of one split), in table order."""
        return tuple(i for i in self.images if split is None or i.split == split)

    def manifest_hash(self, modality: str | None = None, lang: str | None = None) -> str:
        """sha256 over the normalised table rows and the content of every media file they reference.

        With no arguments it covers the whole corpus. ``modality="audio"`` (optionally with ``lang``)
        or ``modality="image"`` covers the concepts table plus only those items, so that a store of
        French audio is not invalidated by a change to the images. Paths enter as written relative to
        the corpus root, so moving the folder keeps the hash; file contents enter through
        :func:`file_digest`, cached per (path, size, mtime) within the process.
        """
        if modality not in (None, "audio", "image"):
            raise ValueError(f"modality must be 'audio', 'image' or None, not {modality!r}")
        if lang is not None and modality != "audio":
            raise ValueError("lang narrows the audio items: pass modality='audio' with it")
        audio = () if modality == "image" else [a for a in self.audio if lang is None or a.lang == lang]
        images = () if modality == "audio" else self.images
        paths = sorted({str(a.path) for a in audio} | {str(i.path) for i in images})
        digests = dict(zip(paths, file_digests(paths)))
        h = hashlib.sha256()
        h.update(f"vgsme-corpus-manifest-v1 modality={modality} lang={lang}\n".encode())
        for c in sorted(self.concepts, key=lambda c: c.name):
            _hash_row(h, ["concept", c.name, c.kind, sorted(c.words.items())])
        for a in sorted(audio, key=lambda a: a.id):
            _hash_row(h, ["audio", a.id, a.lang, a.concept, self._relative(a.path), a.start, a.end,
                          a.speaker, a.source, a.split, digests[str(a.path)]])
        for i in sorted(images, key=lambda i: i.id):
            _hash_row(h, ["image", i.id, i.concept, self._relative(i.path), i.source, i.split,
                          digests[str(i.path)]])
        return h.hexdigest()

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


def _hash_row(h: "hashlib._Hash", row: list) -> None:
    h.update(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode())
    h.update(b"\n")


_digest_cache: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime_ns) for the life of the process.

    The cache makes a second manifest hash (extraction of another language, a resumed run) cost only a
    stat per file; a rewritten file gets a new mtime and is read again. A missing file (possible only when
    media checks were skipped, as `extract-features --skip-bad` does) hashes as "missing", so restoring it
    changes the manifest hash.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    key = (path, st.st_size, st.st_mtime_ns)
    with _digest_lock:
        cached = _digest_cache.get(key)
    if cached is not None:
        return cached
    digest = sha256_file(path)
    with _digest_lock:
        _digest_cache[key] = digest
    return digest


def file_digests(paths: Sequence[str | Path], workers: int = 4) -> list[str]:
    """:func:`file_digest` of many files; threads overlap the reads (hashlib releases the GIL)."""
    if len(paths) < 64:
        return [file_digest(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(file_digest, paths, chunksize=64))


# ----------------------------------------------------------------------------------------------
# Finding a corpus


def resolve_corpus(name_or_path: str | os.PathLike) -> Path:
    """The folder of a corpus: a bare name (no path separator) is ``$VGSME_HOME/corpora/<name>``;
    anything else (``./mine``, ``/data/corpus``, a Path) is used as given.

    Bare names are never looked up in the current directory, so ``--corpus demo`` means the same
    corpus wherever the command is run.
    """
    text = os.fspath(name_or_path)
    is_name = not isinstance(name_or_path, Path) and text not in ("", ".", "..") and not any(
        sep in text for sep in {"/", os.sep, os.altsep} if sep)
    if is_name:
        from cache.layout import corpus_dir  # imported here: cache/ pulls in h5py and zarr, the loader needs neither
        root = corpus_dir(text)
    else:
        root = Path(text)
    if not root.is_dir():
        how = ("a bare name is looked up under $VGSME_HOME/corpora; pass a path (e.g. ./my-corpus) "
               "for a corpus elsewhere" if is_name else "check the path")
        raise CorpusError(root, [Problem(str(root), None, f"corpus {text!r} not found: {root} is not a folder",
                                         f"{how}, or {DEMO_HINT}")])
    return root


# ----------------------------------------------------------------------------------------------
# Loading and validation


def load_corpus(root: str | os.PathLike, check_media: bool = True) -> Corpus:
    """Read and validate a corpus folder; raise :class:`CorpusError` listing every bad row.

    With ``check_media`` (the default) every referenced file must exist, and every audio file's header
    is read (the header only: no samples are decoded) to check that its segment lies inside it.
    ``check_media=False`` checks the tables only: for tools that meet bad media one item at a time
    themselves (``extract-features --skip-bad``).
    """
    root = Path(root).absolute()  # item paths stay valid if the caller changes directory
    problems: list[Problem] = []
    if not root.is_dir():
        raise CorpusError(root, [Problem(str(root), None, "corpus folder does not exist",
                                         f"check the path, or {DEMO_HINT}")])
    concepts, languages = _load_concepts(root, problems)
    checker = _MediaChecker(root, check_media)
    ids: dict[str, tuple[str, int, str]] = {}
    audio = _load_audio(root, concepts, languages, ids, checker, problems)
    images = _load_images(root, concepts, ids, checker, problems)
    if problems:
        raise CorpusError(root, problems)
    return Corpus(root=root, name=root.resolve().name, concepts=tuple(concepts.values()),
                  audio=tuple(audio), images=tuple(images), languages=languages)


def _read_table(root: Path, name: str, required: Sequence[str], problems: list[Problem]
                ) -> tuple[list[str], list[tuple[int, dict[str, str]]]] | None:
    """Header and (line number, row) pairs of one CSV table, cells stripped; None if unusable."""
    path = root / name
    if not path.is_file():
        problems.append(Problem(name, None, f"{path} is missing",
                                f"write {name} with the columns {', '.join(required)} (see docs/corpus-format.md)"))
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(Problem(name, data[:e.start].count(b"\n") + 1, f"not UTF-8 text (byte {e.start})",
                                "save the table as UTF-8 (e.g. iconv -f latin1 -t utf-8)"))
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in required if c not in header]
    if missing:
        problems.append(Problem(name, 1, f"missing column(s) {', '.join(missing)}",
                                f"the header must contain {', '.join(required)}"))
        return None
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append(Problem(name, 1, f"duplicate column(s) {', '.join(dupes)}",
                                "give every column a distinct name"))
        return None
    rows = []
    end = 1  # the line the previous record ended on: a record (quoted newlines) may span several
    try:
        for cells in reader:
            line, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(header):
                problems.append(Problem(name, line, f"{len(cells)} cells for {len(header)} columns",
                                        "quote cells that contain commas; give every row one cell per column"))
                continue
            rows.append((line, {h: c.strip() for h, c in zip(header, cells)}))
    except csv.Error as e:  # e.g. a NUL byte or an unterminated quote; the rows after it cannot be trusted
        problems.append(Problem(name, end + 1, f"unreadable CSV: {e}",
                                "fix the quoting on this line (and check the file is a text CSV)"))
    return header, rows


def _empty_fields(name: str, line: int, row: dict[str, str], required: Iterable[str],
                  problems: list[Problem]) -> bool:
    empty = [c for c in required if not row[c]]
    if empty:
        problems.append(Problem(name, line, f"empty required field(s) {', '.join(empty)}",
                                "fill them in or delete the row"))
    return bool(empty)


def _suggest(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _load_concepts(root: Path, problems: list[Problem]) -> tuple[dict[str, Concept], tuple[str, ...]]:
    table = _read_table(root, CONCEPTS_FILE, CONCEPT_COLUMNS, problems)
    if table is None:
        return {}, ()
    header, rows = table
    languages = tuple(h for h in header if h not in CONCEPT_COLUMNS and LANGUAGE_CODE.match(h))
    if not languages:
        problems.append(Problem(CONCEPTS_FILE, 1, "no word column: no column is named by a language code",
                                "add one word column per language, named by its code (en, fr, nl, ...)"))
    concepts: dict[str, Concept] = {}
    lines: dict[str, int] = {}
    for line, row in rows:
        if _empty_fields(CONCEPTS_FILE, line, row, CONCEPT_COLUMNS, problems):
            continue
        name, kind = row["concept"], row["kind"]
        if kind not in KINDS:
            problems.append(Problem(CONCEPTS_FILE, line, f"bad kind {kind!r} for concept {name!r}",
                                    f"kind is one of {', '.join(KINDS)}"))
            continue
        if name in concepts:
            problems.append(Problem(CONCEPTS_FILE, line, f"duplicate concept {name!r} (also on line {lines[name]})",
                                    "list each concept once"))
            continue
        concepts[name] = Concept(name, kind, {lang: row[lang] for lang in languages})
        lines[name] = line
    return concepts, languages


class _MediaChecker:
    """Existence and audio-header checks, each file looked at once however many rows point at it."""

    def __init__(self, root: Path, enabled: bool):
        self.root, self.enabled = root, enabled
        self._exists: dict[str, bool] = {}
        self._audio: dict[str, float | str] = {}  # duration in seconds, or why the header is unreadable

    def resolve(self, text: str) -> Path:
        return Path(text) if os.path.isabs(text) else self.root / text

    def exists(self, path: Path) -> bool:
        key = os.fspath(path)
        if key not in self._exists:
            self._exists[key] = os.path.isfile(key)
        return self._exists[key]

    def audio_duration(self, path: Path) -> float | str:
        key = os.fspath(path)
        if key not in self._audio:
            self._audio[key] = _probe_audio(key)
        return self._audio[key]


def _probe_audio(path: str) -> float | str:
    """Duration in seconds from the header, or why the file cannot be read (a cut WAV included)."""
    truncation = wav_truncation(path)
    if truncation is not None:
        return str(truncation)
    try:  # opening reads the header only; soundfile.info also formats names we do not need (2x slower)
        with soundfile.SoundFile(path) as f:
            return f.frames / f.samplerate if f.samplerate > 0 else "sample rate 0"
    except Exception as e:  # libsndfile's errors name the problem; keep its words
        return " ".join(str(e).split()) or type(e).__name__


def _parse_time(value: str) -> float | None | str:
    """Seconds, None for an empty cell, or the reason the cell is not a usable time."""
    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        return f"not a number: {value!r}"
    if not math.isfinite(t):
        return f"not a finite number: {value!r}"
    if t < 0:
        return f"negative time {value}"
    return t


def _register_id(name: str, line: int, item_id: str, split: str, ids: dict[str, tuple[str, int, str]],
                 problems: list[Problem]) -> bool:
    """Record an id; a repeat (within or across the audio and image tables) is a problem."""
    if item_id in ids:
        where, first, other = ids[item_id]
        also = f", in split {other!r}" if other != split else ""
        problems.append(Problem(name, line, f"duplicate id {item_id!r} (also {where} line {first}{also})",
                                "ids must be unique across audio.csv and images.csv; an item belongs to one split"))
        return False
    ids[item_id] = (name, line, split)
    return True


def _check_concept_and_split(name: str, line: int, concept: str, split: str,
                             concepts: dict[str, Concept], problems: list[Problem]) -> bool:
    ok = True
    if split not in SPLITS:
        problems.append(Problem(name, line, f"bad split {split!r}", f"split is one of {', '.join(SPLITS)}"))
        ok = False
    if concept not in concepts:
        if concepts:  # with no usable concepts table every row would repeat the same complaint
            problems.append(Problem(name, line, f"unknown concept {concept!r}{_suggest(concept, concepts)}",
                                    f"use a concept of {CONCEPTS_FILE} or add a row for it there"))
        return False
    if ok and concepts[concept].kind == "novel" and split != "test":
        problems.append(Problem(name, line, f"novel concept {concept!r} in split {split!r}",
                                "novel concepts may only appear in the test split (the models must never see them)"))
        ok = False
    return ok


def _load_audio(root: Path, concepts: dict[str, Concept], languages: tuple[str, ...],
                ids: dict[str, tuple[str, int, str]], checker: _MediaChecker,
                problems: list[Problem]) -> list[AudioItem]:
    table = _read_table(root, AUDIO_FILE, AUDIO_COLUMNS, problems)
    if table is None:
        return []
    items: list[AudioItem] = []
    segments: dict[tuple[str, float | None, float | None], tuple[str, int]] = {}  # -> (split, line)
    for line, row in table[1]:
        if _empty_fields(AUDIO_FILE, line, row, AUDIO_REQUIRED, problems):
            continue
        item_id, lang, concept, split = row["id"], row["lang"], row["concept"], row["split"]
        ok = _register_id(AUDIO_FILE, line, item_id, split, ids, problems)
        ok &= _check_concept_and_split(AUDIO_FILE, line, concept, split, concepts, problems)
        if lang not in languages:
            if languages:  # with no word column at all, the header's problem says it once
                problems.append(Problem(AUDIO_FILE, line, f"unknown language {lang!r}: {CONCEPTS_FILE} has no "
                                        f"{lang!r} word column{_suggest(lang, languages)}",
                                        f"add a {lang!r} column with each concept's word to {CONCEPTS_FILE}, "
                                        "or correct the lang"))
            ok = False
        elif concept in concepts and not concepts[concept].words[lang]:
            problems.append(Problem(AUDIO_FILE, line, f"concept {concept!r} has no {lang!r} word in {CONCEPTS_FILE}",
                                    f"write the {lang} word for {concept!r} in {CONCEPTS_FILE}"))
            ok = False
        start, end = _parse_time(row["start"]), _parse_time(row["end"])
        for column, value in (("start", start), ("end", end)):
            if isinstance(value, str):
                problems.append(Problem(AUDIO_FILE, line, f"bad {column}: {value}",
                                        f"{column} is empty (whole file) or seconds >= 0"))
                ok = False
        if isinstance(start, str) or isinstance(end, str):
            start = end = None
        elif start is not None and end is not None and start >= end:
            problems.append(Problem(AUDIO_FILE, line, f"start {row['start']} >= end {row['end']}",
                                    "the segment [start, end) must be non-empty: check the alignment times"))
            ok = False
        path = checker.resolve(row["path"])
        if checker.enabled:
            ok &= _check_audio_file(line, row, path, start, end, checker, problems)
        if split in SPLITS:
            first_split, first_line = segments.setdefault((os.fspath(path), start, end), (split, line))
            if first_line != line:
                segment = f"{row['path']} [{row['start'] or 'start'}, {row['end'] or 'end'})"
                if first_split != split:
                    problems.append(Problem(AUDIO_FILE, line, f"the same audio segment {segment} is in split "
                                            f"{split!r} and in split {first_split!r} on line {first_line}",
                                            "put every item in exactly one split"))
                else:
                    problems.append(Problem(AUDIO_FILE, line, f"the same audio segment {segment} is also "
                                            f"on line {first_line}", "list each spoken word once"))
                ok = False
        if ok:
            items.append(AudioItem(item_id, lang, concept, path, start, end, row["speaker"], row["source"], split))
    return items


def _check_audio_file(line: int, row: dict[str, str], path: Path, start: float | None, end: float | None,
                      checker: _MediaChecker, problems: list[Problem]) -> bool:
    if not checker.exists(path):
        problems.append(Problem(AUDIO_FILE, line, f"missing file {row['path']} ({path})",
                                "correct the path (relative to the corpus folder) or restore the file"))
        return False
    duration = checker.audio_duration(path)
    if isinstance(duration, str):
        problems.append(Problem(AUDIO_FILE, line, f"unreadable audio file {row['path']}: {duration}",
                                "replace the file with a readable WAV/FLAC/OGG, or delete the row"))
        return False
    for column, t in (("end", end), ("start", start)):
        if t is not None and t > duration + DURATION_TOLERANCE_S:
            problems.append(Problem(AUDIO_FILE, line, f"{column} {row[column]} s is beyond the end of "
                                    f"{row['path']} ({duration:.3f} s long)",
                                    "check the alignment times, that the path names the aligned file and that it is not truncated"))
            return False
    if start is not None and end is None and start >= duration:
        problems.append(Problem(AUDIO_FILE, line, f"start {row['start']} s is at or past the end of "
                                f"{row['path']} ({duration:.3f} s long)", "check the alignment times"))
        return False
    return True


def _load_images(root: Path, concepts: dict[str, Concept], ids: dict[str, tuple[str, int, str]],
                 checker: _MediaChecker, problems: list[Problem]) -> list[ImageItem]:
    table = _read_table(root, IMAGES_FILE, IMAGE_COLUMNS, problems)
    if table is None:
        return []
    items: list[ImageItem] = []
    path_split: dict[str, tuple[str, int]] = {}
    for line, row in table[1]:
        if _empty_fields(IMAGES_FILE, line, row, IMAGE_REQUIRED, problems):
            continue
        item_id, concept, split = row["id"], row["concept"], row["split"]
        ok = _register_id(IMAGES_FILE, line, item_id, split, ids, problems)
        ok &= _check_concept_and_split(IMAGES_FILE, line, concept, split, concepts, problems)
        path = checker.resolve(row["path"])
        if checker.enabled and not checker.exists(path):
            problems.append(Problem(IMAGES_FILE, line, f"missing file {row['path']} ({path})",
                                    "correct the path (relative to the corpus folder) or restore the file"))
            ok = False
        key = os.fspath(path)
        if split in SPLITS:
            first = path_split.setdefault(key, (split, line))
            if first[0] != split:
                problems.append(Problem(IMAGES_FILE, line, f"image {row['path']} is in split {split!r} and in "
                                        f"split {first[0]!r} on line {first[1]}",
                                        "put every image in exactly one split"))
                ok = False
        if ok:
            items.append(ImageItem(item_id, concept, path, row["source"], split))
    return items
