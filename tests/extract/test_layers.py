"""`extract-features --layers`: several hidden states of a tiny WavLM in one store, round trip and refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cache.store import open_store
from extract.cli import extract_features
from extract.encoders.base import EncoderUnavailable
from extract.encoders.registry import load_encoder
from tests.extract.corpus_fixtures import write_tiny_corpus

SMALL = {"familiar": 2, "novel": 1, "tokens_per_split": {"train": 2, "valid": 1, "test": 2}}


@pytest.fixture
def corpus(vgsme_home) -> Path:
    return write_tiny_corpus(vgsme_home / "corpora" / "tiny", langs=("en",), **SMALL)


def run(*args: str):
    return CliRunner().invoke(extract_features, [*args, "--quiet"])


def test_layers_all_round_trips_every_hidden_state(corpus, models, vgsme_home):
    wavlm = str(models / "tiny-wavlm")  # 2 transformer layers: hidden states 0, 1, 2
    result = run("--corpus", "tiny", "--lang", "en", "--encoder", wavlm, "--layers", "all", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    folder = vgsme_home / "cache" / "tiny"
    path = folder / "audio-en.tiny-wavlm.L0-2.h5"
    assert result.output.strip() == str(path)
    multi = open_store(path)
    assert multi.layers == (0, 1, 2) and multi.provenance.layer is None
    assert multi.provenance.format_version == 3 and multi.row_shape == (3, 32)
    assert multi.provenance.preprocessing["layer"] == [0, 1, 2]
    x, lengths = multi.read(np.arange(len(multi)))
    assert x.shape == (len(multi), lengths.max(), 3, 32) and x.dtype == np.float16

    # each layer equals a single-layer store of that layer, byte for byte (same batches, same forward pass)
    for layer in (0, 2):
        single = run("--corpus", "tiny", "--lang", "en", "--encoder", wavlm, "--layer", str(layer),
                     "--batch-size", "4")
        assert single.exit_code == 0, single.output
        one = open_store(folder / f"audio-en.tiny-wavlm.L{layer}.h5")
        assert one.provenance.format_version == 2 and "layers" not in one.provenance.to_dict()
        assert np.array_equal(one.items.ids, multi.items.ids)
        y, _ = one.read(np.arange(len(one)))
        picked, _ = multi.read(np.arange(len(multi)), layer=layer)
        assert np.array_equal(y, picked) and np.array_equal(y, x[:, :, layer])
        assert np.array_equal(multi.load(layer=layer).frames.numpy(), one.load().frames.numpy())

    # a rerun with the same options is a no-op; a list of layers is another store, never the same file
    assert run("--corpus", "tiny", "--lang", "en", "--encoder", wavlm, "--layers", "0-2").exit_code == 0
    listed = run("--corpus", "tiny", "--lang", "en", "--encoder", wavlm, "--layers", "0", "2", "--format", "zarr")
    assert listed.exit_code == 0, listed.output
    assert open_store(folder / "audio-en.tiny-wavlm.L0+2.zarr").layers == (0, 2)


def test_layer_requests_that_cannot_be_met_are_one_line_errors(corpus, models, tmp_path):
    wavlm = str(models / "tiny-wavlm")
    cases = [
        (["--lang", "en", "--encoder", wavlm, "--layer", "1", "--layers", "all"], "give one of them"),
        (["--lang", "en", "--encoder", wavlm, "--layers", "0-9"], "out of range"),
        (["--lang", "en", "--encoder", wavlm, "--layers", "1"], "two layers or more"),
        (["--lang", "en", "--encoder", wavlm, "--layers", "top"], "--layers 'top'"),
        (["--modality", "image", "--layers", "all"], "image stores hold one layer"),
        (["--lang", "en", "--encoder", "whisper-base", "--layers", "all"], "only its final output"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(extract_features, ["--corpus", "tiny", *args])
        assert result.exit_code != 0 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    with pytest.raises(EncoderUnavailable, match="image stores hold one layer"):
        load_encoder(str(models / "tiny-resnet"), layers="all", device="cpu")
    with pytest.raises(EncoderUnavailable, match="only its final output"):
        load_encoder("efficientnet-lite0", layers=[0, 1])
