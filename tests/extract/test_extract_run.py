"""The extraction loop: store contents and order, provenance, shards, bad input, resume, reuse."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
import torch

from cache.store import ProvenanceMismatch, journal_path, open_store
from extract.audio import read_segment
from extract.corpus import load_corpus
from extract.encoders.registry import load_encoder
from extract.run import ExtractionError, extract_store, plan_items
from tests.extract.corpus_fixtures import write_tiny_corpus
from tests.extract.tiny_models import save_tiny_wavlm


@pytest.fixture(scope="module")
def wavlm(models):
    return load_encoder(str(models / "tiny-wavlm"), device="cpu")


@pytest.fixture
def corpus_root(tmp_path) -> Path:
    return write_tiny_corpus(tmp_path / "tiny", langs=("en", "fr"), lang_sample_rates={"fr": 22050}, familiar=2,
                             novel=1, tokens_per_split={"train": 3, "valid": 1, "test": 2})


def hdf5_contents(path: Path) -> dict[str, bytes]:
    """Every dataset of an HDF5 store as raw bytes (features and metadata), by name."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].tobytes()) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_audio_store_holds_every_item_length_sorted_with_its_frames(corpus_root, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    path = extract_store(corpus, "audio", "fr", wavlm, tmp_path / "out", batch_size=4, progress=False)
    assert path == tmp_path / "out" / "audio-fr.tiny-wavlm.h5"
    fr = corpus.audio_of("fr")
    with open_store(path) as store:
        assert len(store) == len(fr) and store.dim == 32 and store.modality == "audio"
        durations = [read_segment(a).shape[0] for a in fr]
        by_id = {a.id: n for a, n in zip(fr, durations)}
        ids = store.items.ids.tolist()
        assert ids == [item.id for item in plan_items(corpus, "audio", "fr")[0]]  # shortest first, then by id
        assert [by_id[i] for i in ids] == sorted(by_id.values())
        assert store.lengths.tolist() == [wavlm.frames(by_id[i]) for i in ids]
        assert set(store.items.kind) == {"familiar", "novel"} and set(store.items.split) == {"train", "valid", "test"}
        assert set(store.items.lang) == {"fr"}
        prov = store.provenance
        assert (prov.encoder, prov.encoder_fingerprint, prov.dim, prov.lang) == ("tiny-wavlm", wavlm.fingerprint, 32, "fr")
        assert prov.preprocessing["resampler"] == "soxr-hq"  # the French files are 22.05 kHz
        assert prov.preprocessing["source_sample_rates"] == [22050]
        assert prov.corpus == "tiny" and prov.corpus_hash == corpus.manifest_hash("audio", "fr")
        features, lengths = store.read([0, len(store) - 1])
        item = next(a for a in fr if a.id == ids[-1])
        expected = wavlm.encode([read_segment(item)])[0]
        np.testing.assert_allclose(features[1, : lengths[1]].astype(np.float32), expected, atol=2e-2, rtol=1e-2)


def test_image_store_and_english_needs_no_resampler(corpus_root, models, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    resnet = load_encoder(str(models / "tiny-resnet"), device="cpu")
    path = extract_store(corpus, "image", None, resnet, tmp_path, fmt="zarr", batch_size=8, progress=False)
    assert path.name == "image.tiny-resnet.zarr"
    with open_store(path) as store:
        assert len(store) == len(corpus.images) and store.items.ids.tolist() == sorted(i.id for i in corpus.images)
        features, _ = store.read([0])
        assert features.shape == (1, 64, 64) and features.dtype == np.float16
        assert set(store.items.lang) == {""} and store.provenance.preprocessing["positions"] == 64
    en = extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=8, progress=False)
    with open_store(en) as store:
        assert store.provenance.preprocessing["resampler"] == "none"


def test_interrupted_run_resumes_to_identical_bytes(corpus_root, wavlm, tmp_path, monkeypatch):
    corpus = load_corpus(corpus_root)
    whole = extract_store(corpus, "audio", "en", wavlm, tmp_path / "whole", batch_size=3, progress=False)

    calls = {"n": 0}
    real_encode = wavlm.encode

    def dying_encode(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # stands for a kill between two commits
        return real_encode(batch)

    monkeypatch.setattr(wavlm, "encode", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        extract_store(corpus, "audio", "en", wavlm, tmp_path / "cut", batch_size=3, progress=False)
    target = tmp_path / "cut" / whole.name
    assert not target.exists() and len(list(journal_path(target).glob("0*.npz"))) == 3
    monkeypatch.setattr(wavlm, "encode", real_encode)
    resumed = extract_store(corpus, "audio", "en", wavlm, tmp_path / "cut", batch_size=3, progress=False)
    assert hdf5_contents(resumed) == hdf5_contents(whole)


def test_shards_read_as_one_store(corpus_root, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    whole = extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=4, progress=False)
    shards = [extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=4, shard=(k, 3), progress=False)
              for k in (1, 2, 3)]
    assert [p.name for p in shards] == [f"audio-en.tiny-wavlm.shard-{k}-of-3.h5" for k in (1, 2, 3)]
    with open_store(whole) as one, open_store(shards) as many:
        assert len(many) == len(one) and sorted(many.items.ids) == sorted(one.items.ids)
        order = many.items.index_of(one.items.ids)
        assert many.lengths[order].tolist() == one.lengths.tolist()
        a, _ = one.read(np.arange(len(one)))
        b, _ = many.read(order)
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-2)


def damage(corpus_root: Path, how: str) -> tuple[str, Path]:
    """Break one English audio item's file in one way; return its id and path."""
    corpus = load_corpus(corpus_root)
    item = next(a for a in corpus.audio_of("en") if a.start is None)  # a whole-file word
    if how == "missing":
        item.path.unlink()
    elif how == "corrupt":
        item.path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wav file at all")
    elif how == "empty":
        item.path.write_bytes(b"")
    elif how == "too short":
        soundfile.write(item.path, np.zeros(200, np.float32), 16000, subtype="PCM_16")
    elif how == "truncated":  # the header still promises the whole word
        item.path.write_bytes(item.path.read_bytes()[:-1000])
    return item.id, item.path


@pytest.mark.parametrize("how, reason", [
    ("missing", "file not found"), ("corrupt", "unreadable audio"), ("empty", "unreadable audio"),
    ("too short", "segment too short"), ("truncated", "truncated file: the header says"),
])
def test_bad_input_stops_with_item_path_and_reason(corpus_root, wavlm, tmp_path, how, reason):
    item_id, path = damage(corpus_root, how)
    corpus = load_corpus(corpus_root, check_media=False)
    with pytest.raises(ExtractionError) as caught:
        extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=4, progress=False)
    message = str(caught.value)
    assert item_id in message and str(path) in message and reason in message and "--skip-bad" in message


def test_skip_bad_lists_every_bad_item_in_the_store(corpus_root, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    candidates = [a for a in corpus.audio_of("en") if a.start is None][:5]
    hows = ["missing", "corrupt", "empty", "too short", "truncated"]
    for item, how in zip(candidates, hows):
        if how == "missing":
            item.path.unlink()
        elif how == "too short":
            soundfile.write(item.path, np.zeros(200, np.float32), 16000, subtype="PCM_16")
        elif how == "truncated":
            item.path.write_bytes(item.path.read_bytes()[:-1000])
        else:
            item.path.write_bytes(b"" if how == "empty" else b"garbage" * 10)
    corpus = load_corpus(corpus_root, check_media=False)
    path = extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=4, skip_bad=True, progress=False)
    with open_store(path) as store:
        skipped = dict(zip(store.skipped.ids.tolist(), store.skipped.reason.tolist()))
        assert set(skipped) == {a.id for a in candidates}
        assert len(store) == len(corpus.audio_of("en")) - 5 and not set(skipped) & set(store.items.ids)
        assert "too short" in skipped[candidates[3].id] and "not found" in skipped[candidates[0].id]
        assert "truncated file: the header says" in skipped[candidates[4].id]


class Faulty:
    """The tiny WavLM, except on waveforms of one length (one item of the corpus): there it raises
    (``fault="raise"``), returns NaN (``"nan"``) or values float16 cannot hold (``"huge"``)."""

    def __init__(self, inner, bad_length: int, fault: str):
        self.inner, self.bad_length, self.fault = inner, bad_length, fault

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, batch):
        if self.fault == "oom" and len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.fault == "raise" and any(len(w) == self.bad_length for w in batch):
            raise RuntimeError("shape mismatch in attention")
        if self.fault == "batch-only" and len(batch) > 1 and any(len(w) == self.bad_length for w in batch):
            raise RuntimeError("fails in company")
        out = self.inner.encode(batch)
        for i, wave in enumerate(batch):
            if len(wave) == self.bad_length and self.fault == "empty":
                out[i] = out[i][:0]
            elif len(wave) == self.bad_length and self.fault in ("nan", "huge"):
                out[i] = np.full_like(out[i], np.nan if self.fault == "nan" else 1e5)
        return out


def one_item(corpus, lang="en"):
    """An item whose waveform length no other item of the language shares, and that length."""
    lengths = {a.id: len(read_segment(a)) for a in corpus.audio_of(lang)}
    item = next(a for a in corpus.audio_of(lang) if list(lengths.values()).count(lengths[a.id]) == 1)
    return item, lengths[item.id]


@pytest.mark.parametrize("fault, reason", [
    ("raise", "encoder tiny-wavlm failed on it (RuntimeError: shape mismatch in attention)"),
    ("nan", "encoder produced NaN/Inf"),
    ("huge", "encoder produced values beyond float16's range (max |x| = 1e+05 > 65504)"),
    ("empty", "encoder produced no frames (features of shape (0, 32))"),
])
def test_an_item_the_encoder_fails_on_is_named_or_skipped(corpus_root, wavlm, tmp_path, fault, reason):
    corpus = load_corpus(corpus_root)
    item, length = one_item(corpus)
    faulty = Faulty(wavlm, length, fault)
    with pytest.raises(ExtractionError) as caught:
        extract_store(corpus, "audio", "en", faulty, tmp_path / "stop", batch_size=4, progress=False)
    assert f"item {item.id!r} ({item.path}): {reason}" in str(caught.value) and "--skip-bad" in str(caught.value)

    path = extract_store(corpus, "audio", "en", faulty, tmp_path / "skip", batch_size=4, skip_bad=True,
                         progress=False)
    plan = [a.id for a in plan_items(corpus, "audio", "en")[0]]
    with open_store(path) as store:
        assert store.skipped.ids.tolist() == [item.id] and reason in store.skipped.reason[0]
        assert store.items.ids.tolist() == [i for i in plan if i != item.id]
        # the rest of its batch is encoded as one batch without it: what a resumed run would write
        start = plan.index(item.id) // 4 * 4
        mates = [i for i in plan[start:start + 4] if i != item.id]
        by_id = {a.id: a for a in corpus.audio_of("en")}
        expected = wavlm.encode([read_segment(by_id[i]) for i in mates])
        features, lengths = store.read(store.items.index_of(mates))
        for k, want in enumerate(expected):
            np.testing.assert_array_equal(features[k, : lengths[k]], want.astype(np.float16))


def test_a_batch_that_fails_only_as_a_batch_keeps_every_item(corpus_root, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    item, length = one_item(corpus)
    path = extract_store(corpus, "audio", "en", Faulty(wavlm, length, "batch-only"), tmp_path, batch_size=4,
                         progress=False)
    with open_store(path) as store:
        assert len(store.skipped) == 0 and len(store) == len(corpus.audio_of("en"))
        features, n = store.read(store.items.index_of([item.id]))
        np.testing.assert_array_equal(features[0, : n[0]], wavlm.encode([read_segment(item)])[0].astype(np.float16))


def test_out_of_memory_stops_even_with_skip_bad(corpus_root, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    with pytest.raises(ExtractionError, match=r"out of memory encoding a batch of 4 item\(s\) .*smaller --batch-size"):
        extract_store(corpus, "audio", "en", Faulty(wavlm, 0, "oom"), tmp_path, batch_size=4, skip_bad=True,
                      progress=False)


def test_other_weights_or_changed_corpus_refused_then_rebuilt_with_force(corpus_root, models, wavlm, tmp_path):
    corpus = load_corpus(corpus_root)
    path = extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=8, progress=False)
    before = path.stat().st_mtime_ns
    assert extract_store(corpus, "audio", "en", wavlm, tmp_path, batch_size=8, progress=False) == path
    assert path.stat().st_mtime_ns == before  # complete and matching: left as is

    retrained = load_encoder(str(save_tiny_wavlm(tmp_path / "elsewhere" / "tiny-wavlm", seed=7)), device="cpu")
    with pytest.raises(ProvenanceMismatch, match="encoder_fingerprint"):
        extract_store(corpus, "audio", "en", retrained, tmp_path, batch_size=8, progress=False)
    layer1 = load_encoder(str(models / "tiny-wavlm"), layer=1, device="cpu")
    with pytest.raises(ProvenanceMismatch, match="layer"):
        extract_store(corpus, "audio", "en", layer1, path, batch_size=8, progress=False)

    item = corpus.audio_of("en")[0]
    soundfile.write(item.path, 0.05 * np.ones(8000, np.float32), 16000, subtype="PCM_16")
    changed = load_corpus(corpus_root)
    with pytest.raises(ProvenanceMismatch, match="corpus_hash"):
        extract_store(changed, "audio", "en", wavlm, tmp_path, batch_size=8, progress=False)
    rebuilt = extract_store(changed, "audio", "en", wavlm, tmp_path, batch_size=8, force=True, progress=False)
    with open_store(rebuilt) as store:
        assert store.provenance.corpus_hash == changed.manifest_hash("audio", "en")


def test_plan_is_length_sorted_then_by_id(corpus_root):
    items, headers = plan_items(load_corpus(corpus_root), "audio", "en")
    keys = [(headers[i.id].seconds, i.id) for i in items]
    assert keys == sorted(keys) and len({k[0] for k in keys}) > 1
    with pytest.raises(ExtractionError, match="no audio for language 'de'"):
        plan_items(load_corpus(corpus_root), "audio", "de")
