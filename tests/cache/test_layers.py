"""Stores with a layer axis: audio features (frames, L, D), read whole or one layer, checked as any store."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from cache.errors import CorruptStore, NonFiniteFeatures, StoreError
from cache.layout import StoreNotFound, find_stores, parse_store_name, store_name
from cache.provenance import Provenance
from cache.store import open_store, open_writer
from cache.verify import verify_store
from tests.synthetic import synthetic_items, synthetic_provenance, write_synthetic_store

LAYERS = (0, 4, 8)


def layered_features(n: int, layers: int = len(LAYERS), dim: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(2, 9)), layers, dim)).astype(np.float32) for _ in range(n)]


def write_layered(path, n: int = 20, layers=LAYERS, seed: int = 0):
    features = layered_features(n, len(layers), seed=seed)
    prov = synthetic_provenance("audio", 8).replace(layers=tuple(layers))
    return write_synthetic_store(path, "audio", n, features, provenance=prov), features


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_a_layered_store_round_trips_whole_and_layer_by_layer(tmp_path, suffix):
    path, features = write_layered(tmp_path / f"audio-en.synthetic.L0+4+8{suffix}")
    store = open_store(path)
    assert store.layers == LAYERS and store.row_shape == (3, 8) and store.dim == 8
    assert store.provenance.format_version == 3
    order = np.array([5, 0, 19, 5])
    x, lengths = store.read(order)
    assert x.shape == (4, lengths.max(), 3, 8)
    for row, i in enumerate(order):
        assert np.array_equal(x[row, :lengths[row]], np.float16(features[i]))
        assert not x[row, lengths[row]:].any()
    one, _ = store.read(order, layer=8)
    assert np.array_equal(one, x[:, :, 2])

    everything = store.load(dtype=torch.float32)
    got, pad = everything.gather(torch.tensor(order))
    assert got.shape == (4, lengths.max(), 3, 8)
    assert np.array_equal(got.numpy(), x.astype(np.float32)) and np.array_equal(pad.numpy(), ~(
        np.arange(lengths.max())[None] < lengths[:, None]))
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        mem = store.load(dtype=dtype, layer=4)
        assert mem.frames.shape == (store.total_frames, 8) and mem.dtype == dtype  # one layer resident
        sub, _ = mem.gather(torch.tensor(order))
        assert torch.equal(sub, torch.from_numpy(x[:, :, 1]).to(dtype))
    with pytest.raises(StoreError, match=r"holds layers 0, 4, 8, not layer 3"):
        store.load(layer=3)
    with pytest.raises(StoreError, match="not layer 3"):
        store.read([0], layer=3)


def test_a_single_layer_store_is_format_2_with_the_provenance_it_always_had(tmp_path):
    prov = synthetic_provenance("audio", 8, layer=7)
    assert prov.format_version == 2 and "layers" not in prov.to_dict()
    path = write_synthetic_store(tmp_path / "audio-en.synthetic.L7.h5", "audio", 10, provenance=prov)
    store = open_store(path)
    assert store.layers is None and store.row_shape == (8,)
    assert store.read([0], layer=7)[0].shape == store.read([0])[0].shape  # its own layer may be named
    with pytest.raises(StoreError, match=r"holds one layer \(layer 7\), not layer 3"):
        store.load(layer=3)


def test_layered_provenance_is_checked():
    with pytest.raises(ValueError, match="audio features only"):
        synthetic_provenance("image", 8, positions=4).replace(layers=(0, 1))
    with pytest.raises(ValueError, match="not both"):
        synthetic_provenance("audio", 8, layer=1).replace(layers=(0, 1))
    with pytest.raises(ValueError, match="strictly increasing"):
        synthetic_provenance("audio", 8).replace(layers=(3, 1))
    prov = synthetic_provenance("audio", 8).replace(layers=[0, 1])
    assert Provenance.from_dict(json.loads(json.dumps(prov.to_dict()))) == prov
    assert prov.mismatches(prov.replace(layers=(0, 2))) == ["layers: stored (0, 1), requested (0, 2)"]


def test_the_writer_refuses_items_without_the_layer_axis_and_non_finite_layers(tmp_path):
    prov = synthetic_provenance("audio", 8).replace(layers=LAYERS)
    writer = open_writer(tmp_path / "a.h5", prov, synthetic_items(3), 8)
    with pytest.raises(StoreError, match=r"expected \(T>=1, 3, 8\)"):
        writer.append([np.zeros((4, 8), np.float32)])
    bad = np.zeros((4, 3, 8), np.float32)
    bad[1, 2, 0] = np.nan
    with pytest.raises(NonFiniteFeatures, match="en-0000"):
        writer.append([bad])
    writer.close()


def test_damage_to_one_layer_is_caught_by_read_load_and_verify(tmp_path):
    path, _ = write_layered(tmp_path / "audio-en.synthetic.L0+4+8.h5")
    store = open_store(path)
    start = int(store.offsets[3])
    store.close()
    with h5py.File(path, "r+") as f:
        f["features"][start, 2, 0] = 1000.0  # item 3, frame 0, layer 8 only
    damaged = open_store(path)
    with pytest.raises(CorruptStore, match="en-0003"):
        damaged.read([3], layer=0)  # the checksum covers every layer of the item
    with pytest.raises(CorruptStore, match="en-0003"):
        damaged.load(layer=0)
    assert any("en-0003" in line for line in verify_store(path))


def test_a_layer_axis_that_disagrees_with_the_provenance_is_refused(tmp_path):
    path, _ = write_layered(tmp_path / "audio-en.synthetic.L0+4+8.h5")
    with h5py.File(path, "r+") as f:
        prov = json.loads(f.attrs["provenance"])
        f.attrs["provenance"] = json.dumps({**prov, "layers": [0, 4]})
    with pytest.raises(CorruptStore, match=r"expected \(frames, 2, D\)"):
        open_store(path)
    with h5py.File(path, "r+") as f:
        f.attrs["provenance"] = json.dumps({**prov, "format_version": 2})
    with pytest.raises(CorruptStore, match="store format 2 but its provenance has layers"):
        open_store(path)


def test_names_keep_layered_and_single_layer_stores_apart(tmp_path):
    assert store_name("audio", "m/w", "en", layers=range(13)) == "audio-en.m--w.L0-12.h5"
    assert store_name("audio", "m/w", "en", layers=[0, 6, 12], fmt="zarr") == "audio-en.m--w.L0+6+12.zarr"
    assert parse_store_name("audio-en.m--w.L0+6+12.shard-1-of-2.h5").layers == (0, 6, 12)
    assert parse_store_name("audio-en.m--w.L7.h5").layers is None
    write_layered(tmp_path / store_name("audio", "syn", "en", layers=LAYERS))
    write_synthetic_store(tmp_path / store_name("audio", "syn", "en"), "audio", 5)
    with pytest.raises(StoreNotFound, match="several"):
        find_stores(tmp_path, "audio", "en")
    assert [p.name for p in find_stores(tmp_path, "audio", "en", layered=True)] == ["audio-en.syn.L0+4+8.h5"]
    assert [p.name for p in find_stores(tmp_path, "audio", "en", layered=False)] == ["audio-en.syn.h5"]
    with pytest.raises(StoreNotFound, match="with a layer axis"):
        find_stores(tmp_path, "audio", "fr", layered=True)


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_an_interrupted_layered_store_resumes_to_the_same_bytes(tmp_path, suffix):
    """A writer that stops between batches (as after kill -9: only whole batches are journalled) and is
    reopened packs exactly the store an uninterrupted writer packs."""
    features = layered_features(12, seed=3)
    items = synthetic_items(12)
    prov = synthetic_provenance("audio", 8).replace(layers=LAYERS)
    whole = write_synthetic_store(tmp_path / f"whole{suffix}", "audio", items, features, provenance=prov, batch=5)
    first = open_writer(tmp_path / f"resumed{suffix}", prov, items, 8)
    first.append(features[:5])
    first.close()
    again = open_writer(tmp_path / f"resumed{suffix}", prov, items, 8)
    assert again.done == 5 and len(again.pending) == 7
    again.append(features[5:10])
    again.append(features[10:])
    resumed = open_store(again.finish())
    reference = open_store(whole)
    assert resumed.fingerprint == reference.fingerprint and resumed.layers == LAYERS
    assert np.array_equal(resumed.read(np.arange(12))[0], reference.read(np.arange(12))[0])
