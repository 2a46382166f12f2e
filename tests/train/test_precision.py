"""Precision chosen for the hardware: `auto` by default, resolved once, recorded, features resident to match."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cache
import cache.hardware
from cache import layout
from train.cli import train_heads
from train.embed import embed_store
from train.loop import LoadedStores, autocast_factory, choose_precision, resident_dtype
from train.model import TwoTower
from train.runs import RunConfigError

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import AUDIO_DIM, IMAGE_DIM, write_tiny_cache  # noqa: E402

TINY = ["--langs", "en", "--epochs", "1", "--width", "64", "--batch-size", "32", "--device", "cpu", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def no_native_bf16(monkeypatch):
    """An AVX2-only CPU, as far as the resolver can tell."""
    monkeypatch.setattr(cache.hardware, "cpu_has_native_bf16", lambda: False)


def run_config(home: Path, study: str = "main") -> dict:
    return json.loads((home / "runs" / study / "en-w64-s0" / "config.json").read_text())


def test_default_is_auto_resolved_printed_and_recorded(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"), langs=("en",))
    result = CliRunner().invoke(train_heads, TINY)
    assert result.exit_code == 0, result.output
    expected = cache.hardware.resolve_precision("auto", "cpu").name
    assert run_config(vgsme_home)["precision"] == expected != "auto"
    assert f"precision: {expected} (auto:" in result.output  # printed once, with its reason
    assert result.output.count("precision:") == 1


def test_auto_without_native_bf16_is_fp32_and_explicit_bf16_warns(vgsme_home, no_native_bf16):
    write_tiny_cache(layout.cache_dir("demo"), langs=("en",))
    assert CliRunner().invoke(train_heads, TINY).exit_code == 0
    assert run_config(vgsme_home)["precision"] == "fp32"
    with pytest.warns(UserWarning, match="emulated"):
        result = CliRunner().invoke(train_heads, [*TINY, "--precision", "bf16", "--study", "b"])
    assert result.exit_code == 0, result.output
    assert run_config(vgsme_home, "b")["precision"] == "bf16"
    assert choose_precision("auto", "cpu").name == "fp32"


def test_help_lists_the_precisions_and_the_reference_flag():
    text = CliRunner().invoke(train_heads, ["--help"]).output
    assert "auto (bf16 where the hardware runs it natively" in " ".join(text.split())
    assert "--reference" in text and "[default: auto]" in text


def test_unknown_or_unresolved_precision_is_refused(vgsme_home):
    with pytest.raises(RunConfigError, match="resolve"):
        autocast_factory("cpu", "auto")
    with pytest.raises(ValueError, match="fp16 autocast is for CUDA"):
        choose_precision("fp16", "cpu")
    result = CliRunner().invoke(train_heads, [*TINY, "--precision", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.output


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_features_are_resident_in_the_compute_dtype_with_the_stored_values(tmp_path, precision, dtype):
    folder = write_tiny_cache(tmp_path, langs=("en",))
    assert resident_dtype(precision) == dtype
    for name, modality in (("audio-en.synthetic.h5", "audio"), ("image.synthetic.h5", "image")):
        path = [str(folder / name)]
        store = cache.open_store(folder / name)
        mem = LoadedStores("cpu").memory(path, precision)
        index = torch.tensor([4, 0, 9])
        x, pad = mem.gather(index)
        expected, expected_pad = store.load().gather(index)
        assert x.dtype == dtype
        torch.testing.assert_close(x.float(), expected.float().to(dtype).float())
        assert (pad is None) == (modality == "image")
        if pad is not None:
            assert torch.equal(pad, expected_pad)


def test_embed_store_defaults_to_auto_and_fp32_on_request(tmp_path):
    folder = write_tiny_cache(tmp_path, langs=("en",))
    store = cache.open_store(folder / "audio-en.synthetic.h5")
    torch.manual_seed(0)
    model = TwoTower(AUDIO_DIM, IMAGE_DIM, 64)
    idx = np.arange(10)
    fp32 = embed_store(model, store, idx, precision="fp32")
    auto = embed_store(model, store, idx)
    np.testing.assert_allclose(auto, fp32, atol=2e-2)  # bf16 matmuls where the CPU has them
    if cache.hardware.resolve_precision("auto", "cpu").name == "fp32":
        np.testing.assert_array_equal(auto, fp32)
