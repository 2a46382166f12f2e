"""The demo corpus builder on a tiny --scale: counts, splits, voices, styles, pictures, determinism, resume.

One tiny corpus (all three languages) is built once for the module; the determinism and interruption
tests build an even smaller Dutch-only corpus next to it, sharing its icon cache.
"""
from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from PIL import Image

from extract.corpus import load_corpus
from extract.demo import artwork, voices
from extract.demo.build import (BUILD_FILE, BuildParams, DemoBuildError, build_demo_corpus, is_complete,
                                items_per_concept, plan_audio, plan_images)
from extract.demo.cli import demo_corpus
from extract.demo.concepts import CONCEPTS, VOICES

TINY = 0.075  # 3 tokens per concept and language, 4 pictures per concept: still >= 4 voices and >= 4 artists
SMALL = BuildParams(seed=7, scale=0.05, langs=("nl",))


@pytest.fixture(scope="module")
def icon_cache(request) -> Path:
    """Rendered icons survive between test sessions in pytest's cache (they depend only on the npm sets)."""
    return request.config.cache.mkdir("demo-icons")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, icon_cache) -> Path:
    base = tmp_path_factory.mktemp("demo")
    (base / ".demo-icons").symlink_to(icon_cache, target_is_directory=True)  # every build in base shares it
    result = build_demo_corpus(base / "demo", BuildParams(seed=3, scale=TINY), workers=2, progress=False)
    assert result.built
    return result.root


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_digests(root: Path) -> dict[str, str]:
    """Every file of a corpus but BUILD.json (which records the build's wall time)."""
    return {p.relative_to(root).as_posix(): digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != BUILD_FILE}


def test_loader_accepts_it_and_counts_are_per_concept_and_language(tiny):
    corpus = load_corpus(tiny)
    n_tokens, n_images = items_per_concept(TINY)
    assert (n_tokens, n_images) == (3, 4)
    assert corpus.languages == ("en", "fr", "nl")
    assert len(corpus.concepts) == 32 and len(corpus.concept_names("novel")) == 19
    for concept in corpus.concept_names():
        for lang in corpus.languages:
            assert sum(a.concept == concept and a.lang == lang for a in corpus.audio) == n_tokens, (concept, lang)
        assert sum(i.concept == concept for i in corpus.images) == n_images, concept
    for item in (*corpus.audio, *corpus.images):
        if corpus.kind_of(item.concept) == "novel":
            assert item.split == "test"
    for concept in corpus.concept_names("familiar"):
        assert {i.split for i in corpus.images if i.concept == concept} == {"train", "valid", "test"}
        assert {a.split for a in corpus.audio if a.concept == concept} == {"train", "valid", "test"}
    for image in corpus.images[::10]:
        with Image.open(image.path) as im:
            assert (im.size, im.mode) == ((256, 256), "RGB")
    for a in corpus.audio[::10]:
        info = soundfile.info(a.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 0.15 < info.duration < 1.5


def test_files_are_written_whole_with_the_usual_mode(tiny):
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in tiny.rglob("*") if p.is_file()]
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}  # not mkstemp's 0600
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_splits_do_not_overlap(tiny):
    for table in ("audio.csv", "images.csv"):
        by_split = defaultdict(set)
        for r in rows(tiny / table):
            by_split[r["split"]].add(r["path"])
        assert set(by_split) == {"train", "valid", "test"}
        assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["valid"])
        assert not (by_split["valid"] & by_split["test"])
    ids = [r["id"] for r in rows(tiny / "audio.csv") + rows(tiny / "images.csv")]
    assert len(ids) == len(set(ids))


def test_at_least_four_voices_per_language_and_recorded_ones_first(tiny):
    speakers = defaultdict(set)
    for r in rows(tiny / "audio.csv"):
        speakers[r["lang"]].add(r["speaker"])
    for lang in ("en", "fr", "nl"):
        assert len(speakers[lang]) >= 4, lang
        recorded = {v.speaker for v in VOICES if v.lang == lang and v.recorded}
        assert recorded <= speakers[lang], lang
    assert "mbrola-nl1" not in speakers["nl"]  # Debian's nl1 is silent
    assert {"piper-joe", "mbrola-us1"} <= speakers["en"]


def test_no_voice_and_settings_shared_between_train_and_test_of_a_concept(tiny):
    used = defaultdict(lambda: defaultdict(set))
    for r in rows(tiny / "audio.csv"):
        used[(r["lang"], r["concept"])][r["split"]].add((r["speaker"], r["voice"], r["rate"], r["pitch"]))
    familiar = 0
    for (lang, concept), by_split in used.items():
        train = by_split["train"] | by_split["valid"]
        assert not train & by_split["test"], (lang, concept)
        assert not {s[0] for s in train} & {s[0] for s in by_split["test"]}, (lang, concept)  # held-out voices
        familiar += bool(train)
    assert familiar == 13 * 3


def test_at_least_four_styles_and_artists_per_concept(tiny):
    styles, artists = defaultdict(set), defaultdict(set)
    for r in rows(tiny / "images.csv"):
        styles[r["concept"]].add(r["source"])
        artists[r["concept"]].add(r["artist"])
    assert set(styles) == {c.name for c in CONCEPTS}
    for concept in styles:
        assert len(styles[concept]) >= 4 and len(artists[concept]) >= 4, concept
    water_pistols = {"noto", "twemoji", "fluent-emoji", "fluent-emoji-flat", "fluent-emoji-high-contrast"}
    assert not styles["revolver"] & water_pistols


def _border_white_share(pixels: np.ndarray) -> float:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return float((border.min(axis=1) >= 250).mean())


def test_test_pictures_are_objects_on_white_and_scenes_are_not(tiny):
    test_hashes = []
    for r in rows(tiny / "images.csv"):
        pixels = np.asarray(Image.open(tiny / r["path"]).convert("RGB"))
        white = float((pixels.min(axis=2) >= 250).mean())
        if r["split"] == "test":
            test_hashes.append(digest(tiny / r["path"]))
            assert _border_white_share(pixels) == 1.0, r["id"]
            assert 0.2 < white < 0.98, r["id"]  # white around an object that is really there
        else:
            assert _border_white_share(pixels) < 0.5, r["id"]
            assert white < 0.5, r["id"]
    assert len(test_hashes) == len(set(test_hashes)) > 19 * 4


def test_look_at_me_files_and_credits(tiny):
    with Image.open(tiny / "contact-sheet.png") as sheet:
        assert sheet.width > 12 * 64 and sheet.height > 32 * 64
    listing = (tiny / "audio-listing.md").read_text()
    assert "## nl" in listing and "espeak-nl+m3" in listing
    credits = (tiny / "CREDITS.md").read_text()
    for name in ("OpenMoji", "Twemoji", "CC BY-SA 4.0", "MBROLA", "free of charge"):
        assert name in credits
    licences = {p.name for p in (tiny / "LICENSES").iterdir()}
    assert {"Apache-2.0.txt", "MIT.txt", "CC-BY-4.0.txt", "CC-BY-SA-4.0.txt", "mbrola-nl3.txt"} <= licences
    assert "Faculte Polytechnique de" in (tiny / "LICENSES" / "mbrola-us1.txt").read_text()
    concepts = {r["concept"]: r for r in rows(tiny / "concepts.csv")}
    assert "bench" not in concepts and "bench" in concepts["bed"]["note"] and "cannon" in concepts["rocket"]["note"]
    assert (concepts["fan"]["fr"], concepts["fan"]["nl"]) == ("éventail", "waaier")
    readme = (tiny / "README.md").read_text()
    assert "bench -> bed" in readme and "cannon -> rocket" in readme


def test_rerun_is_a_no_op_and_other_parameters_need_force(tiny):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}
    again = build_demo_corpus(tiny, BuildParams(seed=3, scale=TINY), progress=False)
    assert not again.built
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before
    with pytest.raises(DemoBuildError, match="--force"):
        build_demo_corpus(tiny, BuildParams(seed=4, scale=TINY), progress=False)
    foreign = tiny.parent / "not-a-demo"
    (foreign / "audio").mkdir(parents=True)
    with pytest.raises(DemoBuildError, match="not a complete demo corpus"):
        build_demo_corpus(foreign, BuildParams(seed=3, scale=TINY), progress=False)
    result = CliRunner().invoke(demo_corpus, ["--out", str(tiny), "--seed", "3", "--scale", str(TINY), "--quiet"])
    assert result.exit_code == 0 and "nothing to do" in result.output


def _start_cli(out: Path, params: BuildParams) -> subprocess.Popen:
    code = "from extract.demo.cli import demo_corpus; demo_corpus()"
    return subprocess.Popen([sys.executable, "-c", code, "--out", str(out), "--seed", str(params.seed),
                             "--scale", str(params.scale), "--langs", ",".join(params.langs), "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_build_is_not_complete_and_rerun_finishes_it_identically(tiny):
    base = tiny.parent
    killed, fresh = base / "killed", base / "fresh"
    proc = _start_cli(killed, SMALL)
    partial = killed.with_name("killed.partial")
    deadline = time.monotonic() + 60
    while len(list(partial.rglob("*.wav"))) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)  # the build and its worker processes
    proc.wait()
    assert not killed.exists() and not is_complete(killed) and not is_complete(partial)

    resumed = build_demo_corpus(killed, SMALL, progress=False)
    assert resumed.built and is_complete(killed, SMALL) and not partial.exists()
    build_demo_corpus(fresh, SMALL, workers=1, progress=False)
    assert corpus_digests(killed) == corpus_digests(fresh)  # same seed: same tables and media, byte for byte
    load_corpus(killed)


def test_plan_is_deterministic_and_meets_the_default_counts():
    styles = {c.name: artwork.allowed_sets(c) for c in CONCEPTS}
    params = BuildParams(seed=1)
    a = plan_audio(params, np.random.default_rng(1)), plan_images(params, styles, np.random.default_rng(1))
    b = plan_audio(params, np.random.default_rng(1)), plan_images(params, styles, np.random.default_rng(1))
    c = plan_audio(params, np.random.default_rng(2))
    assert a == b and a[0] != c
    tokens, images = a
    assert len(tokens) == 32 * 3 * 40 and len(images) == 32 * 60
    for lang in ("en", "fr", "nl"):
        assert len({t.speaker for t in tokens if t.lang == lang}) >= 4
    familiar = {c.name for c in CONCEPTS if c.kind == "familiar"}
    for i in images:
        assert i.distractor == "" or (i.distractor in familiar and i.distractor != i.concept)
    assert 0.3 < np.mean([i.distractor != "" for i in images if i.split != "test"]) < 0.5


def test_missing_tools_and_bad_options_give_clear_errors(monkeypatch, tmp_path):
    with monkeypatch.context() as m:
        m.setattr(voices.shutil, "which", lambda name: None)
        with pytest.raises(voices.SpeechToolsMissing, match="apt-get install.*espeak-ng"):
            voices.check_speech_tools(list(VOICES))
    with monkeypatch.context() as m:
        m.setattr(artwork, "node_modules_dirs", lambda: [tmp_path])
        with pytest.raises(artwork.ArtworkMissing, match="npm ci"):
            artwork.check_artwork(["noto", "twemoji"])
    for langs in (["en,de"], ["en", "de"]):
        result = CliRunner().invoke(demo_corpus, ["--out", str(tmp_path / "x"), "--langs", *langs])
        assert result.exit_code == 1 and "--langs en,de" in result.output and "Traceback" not in result.output
    help_text = CliRunner().invoke(demo_corpus, ["--help"]).output
    assert CliRunner().invoke(demo_corpus, ["-h"]).output == help_text
    for option in ("--out", "--seed", "--scale", "--langs", "--workers", "--force", "--quiet", "--verbose"):
        assert option in help_text
    assert all(option.help for option in demo_corpus.params)
    assert not (tmp_path / "x").exists()
