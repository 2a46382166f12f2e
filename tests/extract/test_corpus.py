"""The corpus loader: a valid corpus loads; every kind of bad row is reported, all at once, with its place."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from extract.corpus import (AudioItem, CorpusError, ImageItem, load_corpus, resolve_corpus)
from tests.extract.corpus_fixtures import (AUDIO_COLUMNS, IMAGE_COLUMNS, read_rows, write_rows,
                                           write_tiny_corpus)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("pristine") / "tiny")


@pytest.fixture
def corpus_dir(pristine, tmp_path) -> Path:
    """A fresh, editable copy of the tiny corpus."""
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def edit(root: Path, table: str, change) -> None:
    """Apply ``change(rows)`` to a table of the corpus (rows are dicts; line of rows[i] is i + 2)."""
    path = root / table
    with open(path, encoding="utf-8") as f:
        columns = f.readline().strip().split(",")
    rows = read_rows(path)
    change(rows)
    write_rows(path, rows, columns)


def problems_of(root: Path, **kwargs) -> list[str]:
    with pytest.raises(CorpusError) as info:
        load_corpus(root, **kwargs)
    message = str(info.value)
    assert message.startswith(f"corpus {root} has {len(info.value.problems)} problem(s):")
    lines = [str(p) for p in info.value.problems]
    for line in lines:
        assert line in message and "; fix: " in line
    return lines


def only_problem(root: Path, **kwargs) -> str:
    lines = problems_of(root, **kwargs)
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------------------------- valid


def test_valid_corpus_loads_with_dataclasses_and_helpers(corpus_dir):
    corpus = load_corpus(corpus_dir)
    assert corpus.name == "tiny"
    assert corpus.languages == ("en", "fr")
    assert corpus.concept_names("familiar") == ("dog", "boat", "cow")
    assert corpus.concept_names("novel") == ("ball", "cake")
    assert corpus.concept("dog").words == {"en": "dog", "fr": "chien"}
    assert corpus.kind_of("cake") == "novel"
    # 3 familiar x (4+2+2) + 2 novel x 2 test tokens, per language
    assert len(corpus.audio_of("en")) == 3 * 8 + 2 * 2 == len(corpus.audio_of("fr"))
    assert len(corpus.images) == 3 * 7 + 2 * 2
    assert {i.split for i in corpus.images_of("test")} == {"test"}
    whole, cut = corpus.audio[0], corpus.audio[1]
    assert isinstance(whole, AudioItem) and whole.start is None and whole.end is None
    assert cut.start == pytest.approx(0.2) and cut.end > cut.start
    assert whole.path == corpus_dir / "audio" / "en-dog-train-0.wav" and whole.path.is_file()
    assert isinstance(corpus.images[0], ImageItem)
    assert all(a.split == "test" for a in corpus.audio if corpus.kind_of(a.concept) == "novel")
    with pytest.raises(KeyError, match="no concept 'unicorn'"):
        corpus.concept("unicorn")
    with pytest.raises(AttributeError):
        corpus.audio[0].split = "train"  # frozen


def test_extra_columns_note_and_absolute_paths_are_accepted(corpus_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere.wav"
    soundfile.write(elsewhere, np.zeros(8000, np.float32), 16000)

    def add_note(rows):
        rows[0]["note"] = "substitution: a hand fan"
    path = corpus_dir / "concepts.csv"
    rows = read_rows(path)
    add_note(rows)
    write_rows(path, rows, ["concept", "kind", "en", "fr", "note"])
    edit(corpus_dir, "audio.csv", lambda rows: rows[0].update(path=str(elsewhere)))
    corpus = load_corpus(corpus_dir)
    assert corpus.languages == ("en", "fr")  # 'note' is not a language
    assert corpus.audio[0].path == elsewhere


def test_blank_lines_and_whitespace_are_tolerated(corpus_dir):
    text = (corpus_dir / "images.csv").read_text()
    (corpus_dir / "images.csv").write_text(text.replace("\n", "\n\n", 1).replace(",dog,", ", dog ,"))
    assert len(load_corpus(corpus_dir).images) == 25


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_concept_names_line_and_suggests(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[3].update(concept="dgo"))
    line = only_problem(corpus_dir)
    assert line.startswith("audio.csv line 5: unknown concept 'dgo' (did you mean 'dog'?)")
    assert "concepts.csv" in line


def test_unknown_language(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[0].update(lang="de"))
    line = only_problem(corpus_dir)
    assert line.startswith("audio.csv line 2: unknown language 'de'")
    assert "add a 'de' column" in line


def test_language_with_no_word_for_the_concept(corpus_dir):
    edit(corpus_dir, "concepts.csv", lambda rows: rows[0].update(fr=""))
    lines = problems_of(corpus_dir)
    fr_dog = [r for r in read_rows(corpus_dir / "audio.csv") if r["lang"] == "fr" and r["concept"] == "dog"]
    assert len(lines) == len(fr_dog)
    assert "concept 'dog' has no 'fr' word in concepts.csv" in lines[0]


def test_missing_file(corpus_dir):
    os.remove(corpus_dir / "audio" / "en-boat-valid-0.wav")
    os.remove(corpus_dir / "images" / "img-cow-test-1.png")
    lines = problems_of(corpus_dir)
    assert len(lines) == 2
    audio_line = 2 + [r["id"] for r in read_rows(corpus_dir / "audio.csv")].index("en-boat-valid-0")
    image_line = 2 + [r["id"] for r in read_rows(corpus_dir / "images.csv")].index("img-cow-test-1")
    assert lines[0].startswith(f"audio.csv line {audio_line}: missing file audio/en-boat-valid-0.wav")
    assert lines[1].startswith(f"images.csv line {image_line}: missing file images/img-cow-test-1.png")
    assert len(load_corpus(corpus_dir, check_media=False).audio) == 56  # tables only


def test_duplicate_ids_within_and_across_tables(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[1].update(id=rows[0]["id"]))
    edit(corpus_dir, "images.csv", lambda rows: rows[0].update(id="en-dog-train-2"))
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("audio.csv line 3: duplicate id 'en-dog-train-0' (also audio.csv line 2)")
    assert lines[1].startswith("images.csv line 2: duplicate id 'en-dog-train-2' (also audio.csv line 4)")


def test_same_id_in_two_splits(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[4].update(id=rows[0]["id"]))  # rows[4] is valid split
    line = only_problem(corpus_dir)
    assert line.startswith("audio.csv line 6: duplicate id 'en-dog-train-0' (also audio.csv line 2, in split 'train')")


def test_same_file_in_two_splits(corpus_dir):
    def reuse(rows):
        rows[4]["path"] = rows[0]["path"]      # a valid item pointing at a train item's whole file
    edit(corpus_dir, "audio.csv", reuse)
    edit(corpus_dir, "images.csv", lambda rows: rows[5].update(path=rows[0]["path"]))  # rows[5] is a test image
    lines = problems_of(corpus_dir)
    assert len(lines) == 2
    assert lines[0].startswith("audio.csv line 6: the same audio segment audio/en-dog-train-0.wav [start, end) "
                               "is in split 'valid' and in split 'train' on line 2")
    assert lines[1].startswith("images.csv line 7: image images/img-dog-train-0.png is in split 'test' and "
                               "in split 'train' on line 2")


def test_same_segment_twice_in_one_split_but_other_words_of_an_utterance_are_fine(corpus_dir):
    def twice(rows):
        rows[2]["path"], rows[2]["start"], rows[2]["end"] = rows[1]["path"], rows[1]["start"], rows[1]["end"]
    edit(corpus_dir, "audio.csv", twice)
    assert "the same audio segment audio/en-dog-train-1.wav [0.200000, " in only_problem(corpus_dir)

    def another_word(rows):  # a second word of the same utterance, in another split: allowed
        rows[2]["start"], rows[2]["end"] = "0.0", "0.15"
        rows[5]["path"], rows[5]["start"], rows[5]["end"] = rows[1]["path"], "0.8", "0.95"
    edit(corpus_dir, "audio.csv", another_word)
    load_corpus(corpus_dir)


def test_start_not_before_end(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[1].update(start="0.5", end="0.5"))
    assert only_problem(corpus_dir).startswith("audio.csv line 3: start 0.5 >= end 0.5")


def test_negative_and_non_numeric_times(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: (rows[1].update(start="-0.1"), rows[3].update(end="abc")))
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("audio.csv line 3: bad start: negative time -0.1")
    assert lines[1].startswith("audio.csv line 5: bad end: not a number: 'abc'")


def test_end_beyond_the_file(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[1].update(end="1.5"))  # the utterance lasts 1.0 s
    line = only_problem(corpus_dir)
    assert line.startswith("audio.csv line 3: end 1.5 s is beyond the end of audio/en-dog-train-1.wav (1.000 s long)")
    edit(corpus_dir, "audio.csv", lambda rows: rows[1].update(end="1.002"))  # alignment rounding: tolerated
    load_corpus(corpus_dir)
    edit(corpus_dir, "audio.csv", lambda rows: rows[1].update(start="1.0", end=""))
    assert "start 1.0 s is at or past the end" in only_problem(corpus_dir)


def test_unreadable_audio_header(corpus_dir):
    (corpus_dir / "audio" / "en-dog-train-0.wav").write_bytes(b"not a wav file at all")
    line = only_problem(corpus_dir)
    assert line.startswith("audio.csv line 2: unreadable audio file audio/en-dog-train-0.wav")


def test_truncated_wav_is_refused_with_both_lengths(corpus_dir):
    path = corpus_dir / "audio" / "en-dog-train-1.wav"  # a 1 s utterance whose word lies in its first half
    path.write_bytes(path.read_bytes()[:-8000])
    line = only_problem(corpus_dir)
    assert line.startswith("audio.csv line 3: unreadable audio file audio/en-dog-train-1.wav: truncated file: "
                           "the header says 16000 frames, the file holds 12000")
    assert load_corpus(corpus_dir, check_media=False)  # left to the extraction's item-by-item checks


def test_novel_concept_outside_test(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: next(r for r in rows if r["concept"] == "ball").update(split="train"))
    edit(corpus_dir, "images.csv", lambda rows: next(r for r in rows if r["concept"] == "cake").update(split="valid"))
    lines = problems_of(corpus_dir)
    assert len(lines) == 2
    assert lines[0].startswith("audio.csv line ") and "novel concept 'ball' in split 'train'" in lines[0]
    assert lines[1].startswith("images.csv line ") and "novel concept 'cake' in split 'valid'" in lines[1]
    assert "only appear in the test split" in lines[0]


def test_bad_split_and_bad_kind(corpus_dir):
    edit(corpus_dir, "images.csv", lambda rows: rows[0].update(split="training"))
    edit(corpus_dir, "concepts.csv", lambda rows: rows[4].update(kind="new"))
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("concepts.csv line 6: bad kind 'new' for concept 'cake'")
    # rows naming the now-unknown 'cake' are reported too, each with its own line
    assert any(line.startswith("images.csv line 2: bad split 'training'") for line in lines)
    assert sum("unknown concept 'cake'" in line for line in lines) == 2 * 2 + 2


def test_missing_columns_and_missing_tables(corpus_dir):
    rows = read_rows(corpus_dir / "audio.csv")
    write_rows(corpus_dir / "audio.csv", rows, [c for c in AUDIO_COLUMNS if c not in ("speaker", "split")])
    os.remove(corpus_dir / "images.csv")
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("audio.csv line 1: missing column(s) speaker, split")
    assert lines[1].startswith(f"images.csv: {corpus_dir / 'images.csv'} is missing")
    assert ", ".join(IMAGE_COLUMNS) in lines[1]


def test_no_language_column(corpus_dir):
    rows = read_rows(corpus_dir / "concepts.csv")
    write_rows(corpus_dir / "concepts.csv", rows, ["concept", "kind", "note"])
    assert only_problem(corpus_dir).startswith("concepts.csv line 1: no word column")  # one cause, one complaint


def test_empty_required_fields(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: rows[0].update(speaker="", source=""))
    edit(corpus_dir, "images.csv", lambda rows: rows[1].update(path=""))
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("audio.csv line 2: empty required field(s) speaker, source")
    assert lines[1].startswith("images.csv line 3: empty required field(s) path")


def test_wrong_number_of_cells(corpus_dir):
    with open(corpus_dir / "images.csv", "a") as f:
        f.write("img-extra,dog,images/img-dog-train-0.png,train\n")
    assert only_problem(corpus_dir).startswith("images.csv line 27: 4 cells for 5 columns")


def test_non_utf8_table_and_broken_quoting(corpus_dir):
    data = (corpus_dir / "concepts.csv").read_bytes().replace(b"chien", "ch\u00efen".encode("latin-1"))
    (corpus_dir / "concepts.csv").write_bytes(data)
    with open(corpus_dir / "images.csv", "a", encoding="utf-8") as f:
        f.write('img-x,dog,"images/img-dog-train-0.png,drawn-a,train\n')  # a quote never closed...
        f.write("img-y,dog,images/img-dog-train-1.png,drawn-b,train\n")   # ...swallows the lines after it
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("concepts.csv line 2: not UTF-8 text")
    assert lines[1].startswith("images.csv line 27: 3 cells for 5 columns; fix: quote cells")
    with open(corpus_dir / "images.csv", "a", encoding="utf-8") as f:
        f.write("x" * 200_000 + "\n")  # past the csv module's field size limit
    assert any(line.startswith("images.csv line 27: unreadable CSV: field larger than field limit")
               for line in problems_of(corpus_dir))


def test_every_bad_row_is_listed_at_once(corpus_dir):
    edit(corpus_dir, "audio.csv", lambda rows: [r.update(concept="zebra") for r in rows[:30]])
    edit(corpus_dir, "images.csv", lambda rows: rows[2].update(split="x"))
    lines = problems_of(corpus_dir)
    assert len(lines) == 31
    assert [l.split(":")[0] for l in lines[:30]] == [f"audio.csv line {n}" for n in range(2, 32)]


# ---------------------------------------------------------------------------------------------- manifest hash


def test_manifest_hash_follows_media_and_rows_only(corpus_dir, tmp_path):
    base = load_corpus(corpus_dir).manifest_hash()
    assert load_corpus(corpus_dir).manifest_hash() == base  # stable
    moved = Path(shutil.copytree(corpus_dir, tmp_path / "moved"))
    assert load_corpus(moved).manifest_hash() == base  # the folder's place does not matter
    os.utime(moved / "audio" / "en-dog-train-0.wav", (1, 1))  # touched, same bytes
    assert load_corpus(moved).manifest_hash() == base

    image = moved / "images" / "img-dog-train-0.png"
    image_only = load_corpus(moved).manifest_hash("audio", "en")
    data = bytearray(image.read_bytes())
    data[-20] ^= 1  # one bit of a media file
    image.write_bytes(bytes(data))
    changed = load_corpus(moved, check_media=False)
    assert changed.manifest_hash() != base
    assert changed.manifest_hash("image") != load_corpus(corpus_dir).manifest_hash("image")
    assert changed.manifest_hash("audio", "en") == image_only  # audio stores are not invalidated by images

    edit(corpus_dir, "audio.csv", lambda rows: rows[0].update(speaker="someone-else"))  # one row
    assert load_corpus(corpus_dir).manifest_hash() != base
    with pytest.raises(ValueError, match="lang narrows"):
        changed.manifest_hash("image", "en")


def test_manifest_hash_sees_a_rewritten_file_with_same_size(corpus_dir):
    corpus = load_corpus(corpus_dir)
    before = corpus.manifest_hash()
    path = corpus_dir / "audio" / "en-dog-train-0.wav"
    samples, rate = soundfile.read(path, dtype="int16")
    stat = path.stat()
    soundfile.write(path, -samples, rate, subtype="PCM_16")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert corpus.manifest_hash() != before


def test_manifest_hash_of_a_corpus_with_a_missing_file_changes_when_it_returns(corpus_dir, tmp_path):
    before = load_corpus(corpus_dir).manifest_hash("audio", "en")
    path = corpus_dir / "audio" / "en-dog-train-0.wav"
    kept = path.rename(tmp_path / "kept.wav")
    without = load_corpus(corpus_dir, check_media=False).manifest_hash("audio", "en")  # --skip-bad loads so
    assert without != before
    kept.rename(path)
    assert load_corpus(corpus_dir).manifest_hash("audio", "en") == before


# ---------------------------------------------------------------------------------------------- resolve


def test_resolve_corpus_by_name_and_path(vgsme_home, corpus_dir):
    (vgsme_home / "corpora").mkdir()
    named = Path(shutil.copytree(corpus_dir, vgsme_home / "corpora" / "mini"))
    assert resolve_corpus("mini") == named
    assert resolve_corpus(str(corpus_dir)) == corpus_dir
    assert resolve_corpus(corpus_dir) == corpus_dir
    with pytest.raises(CorpusError) as info:
        resolve_corpus("demo")
    message = str(info.value)
    assert str(vgsme_home / "corpora" / "demo") in message and "vgsme-demo-corpus" in message
    with pytest.raises(CorpusError, match="nowhere"):
        resolve_corpus("./nowhere")


def test_line_numbers_count_physical_lines_across_quoted_newlines(corpus_dir):
    rows = read_rows(corpus_dir / "concepts.csv")
    rows[0]["note"] = "first line\nsecond line"
    rows[2]["kind"] = "sometimes"
    write_rows(corpus_dir / "concepts.csv", rows, ["concept", "kind", "en", "fr", "note"])
    lines = problems_of(corpus_dir)
    assert lines[0].startswith("concepts.csv line 5: bad kind 'sometimes' for concept 'cow'")
