"""The store contract: exact round trips on both backends, resume, refusals, shards."""
import numpy as np
import pytest

import cache
from cache.store import IncompleteStore, ItemTable, ProvenanceMismatch, StoreError, journal_path, open_store, open_writer
from tests.synthetic import synthetic_features, synthetic_items, synthetic_provenance, write_synthetic_store

FORMATS = ["h5", "zarr"]


def _write(path, modality, items, feats, batches, positions=None):
    dim = feats[0].shape[1]
    prov = synthetic_provenance(modality, dim, positions=positions)
    w = open_writer(path, prov, items, dim, positions=positions)
    i = 0
    for b in batches:
        w.append(feats[i:i + b])
        i += b
    return w


def _dump(store):
    x, lengths = store.read(np.arange(len(store)))
    return x, lengths, store.items.to_records(), store.skipped.to_records()


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("modality", ["audio", "image"])
def test_round_trip_is_exact(tmp_path, ext, modality):
    rng = np.random.default_rng(1)
    items = synthetic_items(23, modality)
    feats = synthetic_features(23, modality, 6, rng, positions=5)
    path = write_synthetic_store(tmp_path / f"{modality}.t.{ext}", modality, items, feats)
    with open_store(path) as s:
        assert len(s) == 23 and s.dim == 6 and s.modality == modality and s.complete
        assert s.items == items
        assert s.provenance.mismatches(synthetic_provenance(modality, 6, positions=5 if modality == "image" else None)) == []
        assert list(s.lengths) == [len(f) for f in feats]
        order = rng.permutation(23)
        x, lengths = s.read(order)
        assert x.dtype == np.float16 and x.shape == (23, max(len(f) for f in feats), 6)
        for row, i in enumerate(order):
            assert np.array_equal(x[row, :lengths[row]], feats[i].astype(np.float16))
            assert not x[row, lengths[row]:].any()
        if modality == "audio":
            assert s.offsets[0] == 0 and np.array_equal(np.diff(s.offsets), s.lengths[:-1])


def test_strings_survive_unicode_and_empty(tmp_path):
    recs = [{"id": "fr-é-1", "concept": "éléphant", "kind": "familiar", "lang": "fr", "speaker": "", "source": "mls",
             "split": "train"},
            {"id": "fr-2", "concept": "appareil photo", "kind": "novel", "lang": "fr", "speaker": "spk 2",
             "source": "cv", "split": "test"}]
    for ext in FORMATS:
        p = write_synthetic_store(tmp_path / f"audio-fr.t.{ext}", "audio", recs, lang="fr")
        assert open_store(p).items.to_records() == recs


@pytest.mark.parametrize("ext", FORMATS)
def test_resume_after_interruption_gives_identical_store(tmp_path, ext):
    rng = np.random.default_rng(2)
    items = synthetic_items(30, "audio")
    feats = synthetic_features(30, "audio", 4, rng)
    ref = _write(tmp_path / f"ref.{ext}", "audio", items, feats, [10, 10, 10])
    ref.finish()

    path = tmp_path / f"resumed.{ext}"
    w = _write(path, "audio", items, feats, [4, 7])
    w.skip(items.ids[20], "media/x.wav", "unreadable")
    # a batch that was being written when the process died leaves a .tmp behind
    (journal_path(path) / "00000099.npz.tmp").write_bytes(b"half a batch")
    w.close()
    del w
    with pytest.raises(IncompleteStore):
        open_store(path)
    w2 = open_writer(path, synthetic_provenance("audio", 4), items, 4)
    assert w2.committed == 11 and w2.done == 12
    assert list(w2.pending.ids) == [i for k, i in enumerate(items.ids) if k >= 11 and k != 20]
    w2.skip(items.ids[20], "media/x.wav", "unreadable")  # the rerun meets the same bad item again: no-op
    rest = [feats[k] for k in range(11, 30) if k != 20]
    w2.append(rest[:5])
    w2.append(rest[5:])
    w2.finish()
    assert not journal_path(path).exists()

    a, b = open_store(tmp_path / f"ref.{ext}"), open_store(path)
    keep = np.array([k != 20 for k in range(30)])
    assert b.items == items.select(keep)
    assert b.skipped.to_records() == [{"id": items.ids[20], "path": "media/x.wav", "reason": "unreadable"}]
    xa, la = a.read(np.flatnonzero(keep))
    xb, lb = b.read(np.arange(len(b)))
    assert np.array_equal(la, lb) and xa.tobytes() == xb.tobytes()


def test_reopening_a_finished_store_is_a_no_op(tmp_path):
    items = synthetic_items(5, "audio")
    path = write_synthetic_store(tmp_path / "a.h5", "audio", items)
    w = open_writer(path, synthetic_provenance("audio", 8), items, 8)
    assert w.complete and w.committed == 5 and len(w.pending) == 0
    assert w.finish() == path


@pytest.mark.parametrize("ext", FORMATS)
def test_provenance_mismatch_names_fields(tmp_path, ext):
    items = synthetic_items(6, "audio")
    path = write_synthetic_store(tmp_path / f"a.{ext}", "audio", items)
    other = synthetic_provenance("audio", 8, encoder="other", layer=3, sample_rate=8000)
    with pytest.raises(ProvenanceMismatch) as e:
        open_writer(path, other, items, 8)
    msg = str(e.value)
    assert "encoder" in msg and "layer" in msg and "preprocessing.sample_rate" in msg and "created" not in msg
    assert set(f.split(":")[0] for f in e.value.fields) == {"encoder", "layer", "preprocessing.sample_rate"}
    # the same refusal for an interrupted store (journal only), and for another item plan
    part = tmp_path / f"p.{ext}"
    _write(part, "audio", items, synthetic_features(6, "audio", 8, np.random.default_rng(0)), [2]).close()
    with pytest.raises(ProvenanceMismatch, match="encoder"):
        open_writer(part, other, items, 8)
    with pytest.raises(ProvenanceMismatch, match="items"):
        open_writer(part, synthetic_provenance("audio", 8), synthetic_items(7, "audio"), 8)
    # overwrite rebuilds
    w = open_writer(path, other, items, 8, overwrite=True)
    assert w.committed == 0 and not w.complete


def test_writer_refuses_bad_features_naming_the_item(tmp_path):
    items = synthetic_items(3, "image")
    w = open_writer(tmp_path / "i.h5", synthetic_provenance("image", 4, positions=2), items, 4, positions=2)
    with pytest.raises(StoreError, match=items.ids[0]):
        w.append([np.zeros((3, 4))])
    bad = np.zeros((2, 4)); bad[1, 1] = 1e6  # beyond float16's range
    with pytest.raises(StoreError, match=f"{items.ids[0]}.*NaN or values beyond"):
        w.append([bad])
    with pytest.raises(StoreError, match="not written or skipped"):
        w.finish()
    assert w.committed == 0


def test_bad_item_tables_are_refused(tmp_path):
    recs = synthetic_items(3, "audio").to_records()
    recs[1]["id"] = recs[0]["id"]
    recs[2]["kind"] = "strange"
    with pytest.raises(StoreError, match="duplicate ids.*kind other than"):
        open_writer(tmp_path / "a.h5", synthetic_provenance("audio", 8), ItemTable.from_records(recs), 8)


def test_two_writers_cannot_share_a_store(tmp_path):
    items = synthetic_items(3, "audio")
    w = open_writer(tmp_path / "a.h5", synthetic_provenance("audio", 8), items, 8)
    with pytest.raises(StoreError, match="another process"):
        open_writer(tmp_path / "a.h5", synthetic_provenance("audio", 8), items, 8)
    w.close()


@pytest.mark.parametrize("ext", FORMATS)
def test_shards_read_as_one(tmp_path, ext):
    rng = np.random.default_rng(3)
    items = synthetic_items(17, "audio")
    feats = synthetic_features(17, "audio", 5, rng)
    cuts = [0, 6, 11, 17]
    paths = []
    for k in range(3):
        sel = np.arange(cuts[k], cuts[k + 1])
        paths.append(write_synthetic_store(tmp_path / f"audio-en.t.shard-{k + 1}-of-3.{ext}", "audio",
                                           items.select(sel), [feats[i] for i in sel], shard=(k + 1, 3)))
    whole = write_synthetic_store(tmp_path / f"whole.{ext}", "audio", items, feats)
    s, w = open_store(paths[::-1]), open_store(whole)  # any order: shards sort themselves
    assert s.items == w.items and np.array_equal(s.offsets, w.offsets) and s.provenance.shard is None
    idx = rng.permutation(17)
    assert np.array_equal(s.read(idx)[0], w.read(idx)[0])
    assert np.array_equal(s.load().frames.numpy(), w.load().frames.numpy())
    with pytest.raises(StoreError, match="missing shard.*2-of-3"):
        open_store([paths[0], paths[2]])


def test_incomplete_or_foreign_files_are_refused(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nothing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 store"):
        open_store(tmp_path / "junk.h5")
    with pytest.raises(StoreError, match="must end in"):
        open_store(tmp_path / "x.npy")


def test_item_table_helpers():
    t = synthetic_items(40, "audio")
    assert list(t.index_of([t.ids[7], t.ids[3]])) == [7, 3]
    with pytest.raises(KeyError, match="nope"):
        t.index_of(["nope"])
    m = t.mask(split="train", kind="familiar")
    assert m.sum() == 13 and set(t.select(m).concept) == set(t.concept[:13])
    assert t.mask(concept=["dog", "cat"]).sum() == 3  # dog at 0 and 32, cat at 11
    assert ItemTable.from_records(t.to_records()) == t
    assert cache.ItemTable is ItemTable


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("modality", ["audio", "image"])
def test_library_reads_equal_raw_reads(tmp_path, ext, modality):
    """Both read paths of each backend (positioned raw reads, and the library's own) give the same arrays."""
    rng = np.random.default_rng(6)
    feats = synthetic_features(40, modality, 5, rng, positions=3)
    feats[3] = np.zeros_like(feats[3])
    s = open_store(write_synthetic_store(tmp_path / f"x.{ext}", modality, 40, feats))
    assert all(f._raw is not None for f in s.files)
    idx = rng.integers(0, 40, 15)
    raw = s.read(idx), s.load().frames.numpy()
    for f in s.files:
        f._raw = None
    lib = s.read(idx), s.load().frames.numpy()
    assert np.array_equal(raw[0][0], lib[0][0]) and np.array_equal(raw[0][1], lib[0][1])
    assert np.array_equal(raw[1], lib[1])


def test_all_zero_zarr_chunks_read_as_zeros(tmp_path):
    # zarr leaves chunks equal to the fill value unwritten: the raw reader must read them as zeros
    feats = [np.zeros((2, 4), np.float32) for _ in range(6)]
    s = open_store(write_synthetic_store(tmp_path / "z.zarr", "image", 6, feats, positions=2))
    x, _ = s.read([5, 0])
    assert x.shape == (2, 2, 4) and not x.any()
