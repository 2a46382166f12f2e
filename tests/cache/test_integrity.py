"""Stores prove their own integrity: every class of damage is one clean StoreError on open, load, read or
verify (naming the store, the item or chunk, and the fix), never a traceback, zeros or wrong data."""
import ast
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cache
from cache.__main__ import cli
from cache.errors import CorruptStore, NonFiniteFeatures, StoreError
from cache.store import journal_path, open_store, open_writer
from cache.verify import verify_store
from tests.synthetic import synthetic_features, synthetic_items, synthetic_provenance, write_synthetic_store

FIX = "extract-features --force"


def _flip_h5_bytes(path: Path, row: int) -> None:
    """Flip bytes of one features row in the file itself, behind h5py's back (bit rot)."""
    with h5py.File(path, "r") as f:
        ds = f["features"]
        at = ds.id.get_offset() + row * int(np.prod(ds.shape[1:])) * 2
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(4)
        fh.seek(at)
        fh.write(bytes(x ^ 0x5A for x in b))


def _zarr_store(tmp_path, monkeypatch, name="audio-en.t.zarr"):
    monkeypatch.setattr("cache.zarr_backend.CHUNK_BYTES", 64)  # 64 B chunks: 4 frames of dim 8 per chunk
    return write_synthetic_store(tmp_path / name, "audio", 10, seed=2)


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_flipped_bytes_in_hdf5_features_are_caught(tmp_path, modality):
    path = write_synthetic_store(tmp_path / f"{modality}.t.h5", modality, 12, seed=3)
    store = open_store(path)
    row = int(store.offsets[5]) + 1 if modality == "audio" else 5
    fingerprint = store.fingerprint
    store.close()
    _flip_h5_bytes(path, row)
    problems = verify_store(path)
    assert len(problems) == 1 and "fail their checksum" in problems[0] and store.items.ids[5] in problems[0]
    assert FIX in problems[0]
    with pytest.raises(CorruptStore, match=f"{path.name}.*{store.items.ids[5]}.*{FIX}"):
        open_store(path).load()
    with pytest.raises(CorruptStore, match=store.items.ids[5]):
        open_store(path).read([5])
    r = CliRunner().invoke(cli, ["verify", str(path)])
    assert r.exit_code == 1 and store.items.ids[5] in r.output
    assert open_store(path).fingerprint == fingerprint  # the fingerprint is of what was written


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_zarr_chunk_deleted_or_truncated_is_an_error_everywhere(tmp_path, monkeypatch, damage):
    path = _zarr_store(tmp_path, monkeypatch)
    chunk = path / "features" / "c" / "2" / "0"
    assert chunk.is_file() and (path / "features" / "c" / "3" / "0").is_file()
    if damage == "delete":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:10])
    word = "missing" if damage == "delete" else "truncated"
    problems = "\n".join(verify_store(path))
    assert f"chunk file(s) {word} (c/2/0)" in problems and FIX in problems
    with pytest.raises(CorruptStore, match=f"{path.name}.*{word} \\(c/2/0\\).*{FIX}"):
        open_store(path)


def test_zarr_chunk_lost_after_open_is_an_error_not_zeros(tmp_path, monkeypatch):
    path = _zarr_store(tmp_path, monkeypatch)
    store = open_store(path)
    (path / "features" / "c" / "1" / "0").unlink()
    with pytest.raises(CorruptStore, match=f"{path.name}.*c/1/0.*missing"):
        store.load()
    with pytest.raises(CorruptStore, match="missing"):
        store.read(np.arange(len(store)))


def test_all_zero_items_are_written_as_chunks(tmp_path, monkeypatch):
    """An all-zero chunk is stored (not left to zarr's fill value), so zero items verify and load."""
    monkeypatch.setattr("cache.zarr_backend.CHUNK_BYTES", 64)
    feats = [np.zeros((2, 8), np.float32) for _ in range(6)]
    path = write_synthetic_store(tmp_path / "image.t.zarr", "image", 6, feats, positions=2)
    assert verify_store(path) == [] and not open_store(path).load().frames.any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 70000.0])
def test_non_finite_or_float16_overflowing_features_are_refused_at_write(tmp_path, bad):
    items = synthetic_items(4, "audio")
    path = tmp_path / "audio-en.t.h5"
    w = open_writer(path, synthetic_provenance("audio", 3), items, 3)
    w.append([np.ones((2, 3))])
    x = np.ones((3, 3), np.float32)
    x[1, 2] = bad
    with pytest.raises(NonFiniteFeatures, match=f"item {items.ids[2]}.*nothing of this batch was written"):
        w.append([np.ones((2, 3)), x])
    assert isinstance(NonFiniteFeatures("x"), StoreError)
    assert w.committed == 1 and len(list(journal_path(path).glob("0*.npz"))) == 1
    w.append([np.ones((2, 3)), np.ones((2, 3)), np.full((1, 3), 65504.0)])  # float16's max is fine
    w.finish()
    assert verify_store(path) == []


def test_truncated_hdf5_store_is_refused(tmp_path):
    path = write_synthetic_store(tmp_path / "image.t.h5", "image", 20, seed=1)
    size = path.stat().st_size
    for keep in (size - 100, size // 2, 100):
        cut = tmp_path / f"cut{keep}.h5"
        cut.write_bytes(path.read_bytes()[:keep])
        with pytest.raises(StoreError, match=cut.name):
            open_store(cut).load()
        problems = verify_store(cut)
        assert problems and cut.name in problems[0]


def _rewrite_h5(path: Path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


@pytest.mark.parametrize("case, expect", [
    ("float32 features", "features are float32, expected float16"),
    ("wrong dim", "features have dim 5, provenance says 8"),
    ("offsets", "offsets inconsistent with lengths from item 4"),
    ("lengths", "lengths sum to"),
    ("missing column", "missing column\\(s\\) items/speaker"),
    ("short column", "items/concept has 9 entries, lengths has 10"),
    ("column dtype", "lengths is float64"),
    ("old format", "store format 1"),
    ("no checksums", "missing column\\(s\\) checksums"),
    ("foreign format attr", "format attribute says 'zarr'"),
])
def test_inconsistent_hdf5_stores_are_refused_on_open_and_verify(tmp_path, case, expect):
    path = write_synthetic_store(tmp_path / "audio-en.t.h5", "audio", 10, seed=4)

    def edit(f):
        if case in ("float32 features", "wrong dim"):
            x = f["features"][()]
            del f["features"]
            f["features"] = x.astype(np.float32) if case == "float32 features" else x[:, :5]
        elif case == "offsets":
            off = f["offsets"][()]
            off[4:] += 1
            f["offsets"][...] = off
        elif case == "lengths":
            f["lengths"][0] = f["lengths"][0] + 1
            f["offsets"][1:] = f["offsets"][1:] + 1
        elif case == "missing column":
            del f["items/speaker"]
        elif case == "short column":
            x = f["items/concept"][()]
            del f["items/concept"]
            f["items/concept"] = x[:9]
        elif case == "column dtype":
            x = f["lengths"][()]
            del f["lengths"]
            f["lengths"] = x.astype(np.float64)
        elif case == "old format":
            f.attrs["provenance"] = f.attrs["provenance"].replace('"format_version": 2', '"format_version": 1')
        elif case == "no checksums":
            del f["checksums"]
        else:
            f.attrs["format"] = "zarr"
    _rewrite_h5(path, edit)
    with pytest.raises(StoreError, match=expect):
        open_store(path)
    problems = "\n".join(verify_store(path))
    assert problems and (expect.replace("\\", "") in problems), problems
    r = CliRunner().invoke(cli, ["info", str(path)])
    assert r.exit_code == 1 and "Traceback" not in r.output and path.name in r.output


def test_checksum_column_tampered_is_caught(tmp_path):
    path = write_synthetic_store(tmp_path / "image.t.h5", "image", 6)
    _rewrite_h5(path, lambda f: f["checksums"].__setitem__(2, f["checksums"][2] ^ 1))
    with pytest.raises(CorruptStore, match="img-0002"):
        open_store(path).load()


def test_shard_sets_mixing_stores_are_refused(tmp_path):
    items = synthetic_items(12, "audio")
    feats = synthetic_features(12, "audio", 8, np.random.default_rng(0))
    one = write_synthetic_store(tmp_path / "a.shard-1-of-2.h5", "audio", items.select(np.arange(6)), feats[:6],
                                shard=(1, 2))
    # shard 2 of another extraction that holds the same items again
    two = write_synthetic_store(tmp_path / "b.shard-2-of-2.h5", "audio", items.select(np.arange(6)), feats[:6],
                                shard=(2, 2))
    with pytest.raises(StoreError, match="do not form one store.*6 item\\(s\\) appear in several"):
        open_store([one, two])
    other = write_synthetic_store(tmp_path / "c.shard-2-of-2.h5", "audio", items.select(np.arange(6, 12)),
                                  feats[6:], shard=(2, 2), encoder="other")
    with pytest.raises(StoreError, match="disagree: encoder"):
        open_store([one, other])
    with pytest.raises(StoreError, match="not a full shard set"):
        open_store([one, one])


def test_files_that_are_not_stores_are_refused(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not a vgsme store"):
        open_store(plain)
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="junk.zarr"):
        open_store(tmp_path / "junk.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(StoreError, match="not a readable Zarr store"):
        open_store(tmp_path / "empty.zarr")
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(StoreError, match="not a readable HDF5 store"):
        open_store(tmp_path / "dir.h5")
    for p in (plain, tmp_path / "junk.zarr", tmp_path / "dir.h5"):
        assert verify_store(p)


def test_the_backend_follows_the_content_not_the_name(tmp_path):
    zarr_store = write_synthetic_store(tmp_path / "audio-en.t.zarr", "audio", 7, seed=5)
    renamed = tmp_path / "audio-en.t.h5"
    shutil.move(zarr_store, renamed)
    store = open_store(renamed)
    assert type(store.files[0]).__name__ == "ZarrReader" and len(store) == 7 and verify_store(renamed) == []


def test_fingerprint_covers_feature_bytes(tmp_path):
    items = synthetic_items(5, "image")
    prov = synthetic_provenance("image", 8, positions=4)
    rng = np.random.default_rng(0)
    feats = synthetic_features(5, "image", 8, rng)
    a = write_synthetic_store(tmp_path / "a.h5", "image", items, feats, provenance=prov)
    b = write_synthetic_store(tmp_path / "b.zarr", "image", items, feats, provenance=prov)
    feats[3] = feats[3] + 1
    c = write_synthetic_store(tmp_path / "c.h5", "image", items, feats, provenance=prov)
    fa, fb, fc = (open_store(p).fingerprint for p in (a, b, c))
    assert fa == fb != fc
    # rebuilt later from the same inputs (another `created` time): same bytes, same fingerprint
    rebuilt = write_synthetic_store(tmp_path / "d.h5", "image", items, feats, provenance=prov.replace(
        created="2030-01-01T00:00:00+00:00"))
    assert open_store(rebuilt).fingerprint == fc


def test_cli_answers_help():
    runner = CliRunner()
    for args in (["-h"], ["info", "-h"], ["verify", "-h"], ["--help"]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 0 and "Usage" in r.output, args
    assert "--quiet" in runner.invoke(cli, ["verify", "-h"]).output


def test_no_import_cycle_in_the_package():
    """Module-level imports between cache's modules form no cycle (imports under TYPE_CHECKING or inside
    functions do not count: they run after every module is loaded)."""
    folder = Path(cache.__file__).parent
    graph = {}
    for p in folder.glob("*.py"):
        deps = set()
        for node in ast.parse(p.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cache."):
                deps.add(node.module.split(".")[1])
        graph[p.stem] = {d.split(".")[0] for d in deps} - {p.stem}
    del graph["__init__"]
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2 or m not in graph:
            return
        state[m] = 1
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = 2
    for m in sorted(graph):
        visit(m, [])
    assert "formats" in graph["reader"] and "reader" not in graph["hdf5"]


@pytest.mark.parametrize("ext", ["h5", "zarr"])
def test_load_verifies_on_first_use_then_trusts_the_unchanged_file(tmp_path, monkeypatch, ext):
    if ext == "zarr":
        monkeypatch.setattr("cache.zarr_backend.CHUNK_BYTES", 64)
    path = write_synthetic_store(tmp_path / f"audio-en.t.{ext}", "audio", 10, seed=6)
    record = path.with_name(path.name + ".verified.json")
    first = open_store(path).load()
    assert record.is_file()

    def no_check(*_):
        raise AssertionError("a recorded, unchanged file was checked again")
    with monkeypatch.context() as m:
        m.setattr("cache.reader.bad_items", no_check)
        assert torch.equal(open_store(path).load().frames, first.frames)
    # any write to the file (here: bytes of item 3 flipped in place) changes its identity: checked again
    store = open_store(path)
    if ext == "h5":
        _flip_h5_bytes(path, int(store.offsets[3]))
    else:
        chunk = path / "features" / "c" / str(int(store.offsets[3]) // 4) / "0"
        data = bytearray(chunk.read_bytes())
        data[(int(store.offsets[3]) % 4) * 16] ^= 0xFF
        chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStore, match="en-0003"):
        open_store(path).load()
    cache.remove_store(path)
    assert not record.exists()


def test_verify_and_read_ignore_the_record(tmp_path):
    """Damage that bypasses the file system is not seen by the shortcut, but verify and read() see it."""
    from cache.verified import identity, mark_verified
    path = write_synthetic_store(tmp_path / "image.t.h5", "image", 6)
    store = open_store(path)
    _flip_h5_bytes(path, 4)
    mark_verified(path, store._file_fingerprint(0), identity(path))  # as if verified after the damage
    assert open_store(path).load().frames.shape[0] == 6
    assert "img-0004" in verify_store(path)[0]
    with pytest.raises(CorruptStore, match="img-0004"):
        open_store(path).read([4])


def test_an_unwritable_cache_folder_only_means_checking_every_load(tmp_path, monkeypatch):
    from cache.atomic import OutputError

    def refuse(path, data):
        raise OutputError(f"cannot write {path}: read-only")
    monkeypatch.setattr("cache.verified.write_json", refuse)
    path = write_synthetic_store(tmp_path / "image.t.h5", "image", 6)
    assert open_store(path).load().frames.shape[0] == 6
    assert not path.with_name(path.name + ".verified.json").exists()
