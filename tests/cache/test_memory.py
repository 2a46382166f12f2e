"""InMemoryFeatures.gather against a naive per-item reference."""
import numpy as np
import pytest
import torch

from cache.store import open_store
from tests.synthetic import synthetic_features, write_synthetic_store


def _naive(feats, idx):
    t = max(len(feats[i]) for i in idx)
    x = np.zeros((len(idx), t, feats[0].shape[1]), np.float16)
    pad = np.ones((len(idx), t), bool)
    for r, i in enumerate(idx):
        x[r, :len(feats[i])] = feats[i].astype(np.float16)
        pad[r, :len(feats[i])] = False
    return x, pad


@pytest.fixture(params=["single", "split"])
def take_mode(request, monkeypatch):
    """Run a gather test with one np.take and with the copy split over a thread pool (forced on tiny data)."""
    if request.param == "split":
        monkeypatch.setattr("cache.memory.PARALLEL_TAKE_BYTES", 0)
        monkeypatch.setattr("cache.memory.os.cpu_count", lambda: 3)
    return request.param


@pytest.mark.parametrize("ext", ["h5", "zarr"])
def test_audio_gather_matches_naive_reference(tmp_path, ext, take_mode):
    rng = np.random.default_rng(4)
    feats = synthetic_features(50, "audio", 7, rng, min_len=1, max_len=12)
    mem = open_store(write_synthetic_store(tmp_path / f"a.{ext}", "audio", 50, feats)).load()
    assert mem.frames.shape == (sum(len(f) for f in feats), 7) and mem.frames.dtype == torch.float16
    buf = mem.new_buffer(20)
    for idx in (rng.integers(0, 50, 20), np.array([49]), np.array([3, 3, 0])):
        for out in (None, buf):
            x, pad = mem.gather(torch.as_tensor(idx), out=out)
            rx, rpad = _naive(feats, idx)
            assert x.dtype == torch.float16 and np.array_equal(x.numpy(), rx) and np.array_equal(pad.numpy(), rpad)
    means = mem.gather_mean(torch.tensor([0, 5]), batch=1)
    assert torch.allclose(means[1], torch.from_numpy(feats[5].astype(np.float16).astype(np.float32).mean(0)), atol=1e-5)


def test_image_gather_matches_naive_reference(tmp_path, take_mode):
    rng = np.random.default_rng(5)
    feats = synthetic_features(30, "image", 6, rng, positions=3)
    mem = open_store(write_synthetic_store(tmp_path / "i.h5", "image", 30, feats)).load()
    idx = rng.integers(0, 30, 12)
    x, pad = mem.gather(idx, out=mem.new_buffer(12))
    assert pad is None and np.array_equal(x.numpy(), np.stack([feats[i] for i in idx]).astype(np.float16))
    assert torch.allclose(mem.gather_mean([2])[0], torch.from_numpy(feats[2].astype(np.float16).astype(np.float32).mean(0)))


def test_gather_refuses_out_of_range_and_small_buffers(tmp_path):
    mem = open_store(write_synthetic_store(tmp_path / "a.h5", "audio", 5)).load()
    with pytest.raises(IndexError):
        mem.gather([5])
    with pytest.raises(IndexError):
        mem.gather([-1])
    with pytest.raises(ValueError, match="new_buffer"):
        mem.gather([0, 1, 2], out=mem.new_buffer(1))
