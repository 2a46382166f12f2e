"""InMemoryFeatures.gather against a naive per-item reference, in each storage dtype."""
import numpy as np
import pytest
import torch

from cache.errors import CorruptStore
from cache.memory import InMemoryFeatures
from cache.store import open_store
from tests.synthetic import synthetic_features, write_synthetic_store

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _naive(feats, idx, dtype):
    """Per-item reference: float16 as stored, then the storage dtype; zero rows and True at padding."""
    t = max(len(feats[i]) for i in idx)
    x = torch.zeros((len(idx), t, feats[0].shape[1]), dtype=dtype)
    pad = np.ones((len(idx), t), bool)
    for r, i in enumerate(idx):
        x[r, :len(feats[i])] = torch.from_numpy(feats[i].astype(np.float16)).to(dtype)
        pad[r, :len(feats[i])] = False
    return x, pad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ext", ["h5", "zarr"])
def test_audio_gather_matches_naive_reference(tmp_path, ext, dtype):
    rng = np.random.default_rng(4)
    feats = synthetic_features(50, "audio", 7, rng, min_len=1, max_len=12)
    mem = open_store(write_synthetic_store(tmp_path / f"a.{ext}", "audio", 50, feats)).load(dtype=dtype)
    assert mem.frames.shape == (sum(len(f) for f in feats), 7) and mem.dtype == dtype
    assert not mem.frames_padded[-1].any()  # the padding row
    for idx in (rng.integers(0, 50, 20), np.array([49]), np.array([3, 3, 0])):
        x, pad = mem.gather(torch.as_tensor(idx))
        rx, rpad = _naive(feats, idx, dtype)
        assert x.dtype == dtype and torch.equal(x, rx) and np.array_equal(pad.numpy(), rpad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_image_gather_matches_naive_reference(tmp_path, dtype):
    rng = np.random.default_rng(5)
    feats = synthetic_features(30, "image", 6, rng, positions=3)
    mem = open_store(write_synthetic_store(tmp_path / "i.h5", "image", 30, feats)).load(dtype=dtype)
    idx = rng.integers(0, 30, 12)
    x, pad = mem.gather(idx)
    want = torch.from_numpy(np.stack([feats[i] for i in idx]).astype(np.float16)).to(dtype)
    assert pad is None and x.dtype == dtype and torch.equal(x, want)


def test_from_numpy_equals_from_store(tmp_path):
    rng = np.random.default_rng(6)
    feats = synthetic_features(9, "audio", 4, rng)
    store = open_store(write_synthetic_store(tmp_path / "a.h5", "audio", 9, feats))
    frames = np.concatenate(feats).astype(np.float16)
    mem = InMemoryFeatures.from_numpy("audio", frames, store.lengths, store.offsets, dtype=torch.bfloat16)
    idx = torch.tensor([8, 0, 4])
    a, b = mem.gather(idx), store.load(dtype=torch.bfloat16).gather(idx)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gather_refuses_out_of_range_and_bad_dtypes(tmp_path):
    store = open_store(write_synthetic_store(tmp_path / "a.h5", "audio", 5))
    mem = store.load()
    with pytest.raises(IndexError):
        mem.gather([5])
    with pytest.raises(IndexError):
        mem.gather([-1])
    with pytest.raises(ValueError, match="float16"):
        store.load(dtype=torch.int8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_load_checks_every_item(tmp_path, dtype):
    """Bytes flipped inside one item's features make load() fail naming that item, in every dtype path."""
    import h5py
    path = write_synthetic_store(tmp_path / "audio-en.t.h5", "audio", 12, seed=1)
    with h5py.File(path, "r+") as f:
        off = f["offsets"][()]
        row = f["features"][off[7]]
        f["features"][off[7]] = -row - 1
    with pytest.raises(CorruptStore, match="en-0007.*extract-features --force"):
        open_store(path).load(dtype=dtype)
    with pytest.raises(CorruptStore, match="en-0007"):
        open_store(path).read([2, 7])
    assert open_store(path).read([2, 3])[0].shape[0] == 2  # the sound items still read


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_gather_equals_cpu_gather(tmp_path, dtype):
    rng = np.random.default_rng(7)
    store = open_store(write_synthetic_store(tmp_path / "a.h5", "audio", 40, synthetic_features(40, "audio", 8, rng)))
    images = open_store(write_synthetic_store(tmp_path / "i.zarr", "image", 20,
                                              synthetic_features(20, "image", 8, rng, positions=3)))
    for s in (store, images):
        cpu, gpu = s.load(dtype=dtype), s.load(device="cuda", dtype=dtype)
        idx = torch.as_tensor(rng.integers(0, len(s), 16))
        (xc, pc), (xg, pg) = cpu.gather(idx), gpu.gather(idx)
        assert xg.device.type == "cuda" and torch.equal(xc, xg.cpu())
        assert (pc is None and pg is None) or torch.equal(pc, pg.cpu())
