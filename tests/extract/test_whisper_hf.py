"""whisper-base-hf: the packaged Whisper-base weights in transformers, against CTranslate2 and transformers.

Tolerances (measured with bench/whisper_hf.py, docs/extraction.md "Whisper-base in transformers"): both engines
run the same float16 weights in float32, and on 48 spoken demo words their final layers differ by a relative L2
of 4.3e-6 (worst word 8.8e-6; max abs 9.1e-5 on features up to 22.4), a padded batch differs from one-at-a-time
by 3.2e-6 (max abs 1.7e-4); the float16 store's own rounding of the same features is 2.1e-4 (max abs 7.8e-3).
The bounds below are four times under that rounding: the two encoders' stores agree to within storage rounding.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from extract.encoders.base import EncoderUnavailable
from extract.encoders.ct2_model_bin import ModelBinError, read_model_bin
from extract.encoders.registry import load_encoder
from extract.encoders.whisper_hf import WhisperHFEncoder, hidden_states

MAX_RELATIVE_L2 = 5e-5
MAX_ABS = 2e-3
LENGTHS = (16000, 8100, 5000, 12000, 330)  # 50, 26, 16, 38 and 2 frames


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("whisper") / "models"


@pytest.fixture(scope="module")
def final(models_dir) -> WhisperHFEncoder:
    return load_encoder("whisper-base-hf", device="cpu", models_dir=models_dir)


@pytest.fixture(scope="module")
def ctranslate2(models_dir):
    return load_encoder("whisper-base", device="cpu", models_dir=models_dir)


@pytest.fixture(scope="module")
def every_layer(models_dir) -> WhisperHFEncoder:
    return load_encoder("whisper-base-hf", device="cpu", models_dir=models_dir, layers="all")  # as --layers all


def speech_like(lengths=LENGTHS, seed: int = 0) -> list[np.ndarray]:
    """Voiced sounds: a harmonic series on a gliding pitch, syllable-rate loudness, a little noise."""
    rng = np.random.default_rng(seed)
    waves = []
    for n in lengths:
        t = np.arange(n) / 16000
        pitch = 110 + 60 * rng.random() + 30 * np.sin(2 * np.pi * 2 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / 16000
        voice = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.random() * 6)
        waves.append((0.1 * voice * envelope + 0.003 * rng.standard_normal(n)).astype(np.float32))
    return waves


def spoken_words(folder: Path) -> list[np.ndarray]:
    """Four words spoken by espeak-ng (English and French), as the demo builder speaks them."""
    from extract.demo.concepts import Voice
    from extract.demo.voices import SpeechSettings, SpeechToolsMissing, check_speech_tools, synthesise

    voices = [Voice(f"espeak-{lang}", lang, "espeak-ng", lang, "M", False, "test") for lang in ("en", "fr")]
    try:
        check_speech_tools(voices)
    except SpeechToolsMissing as missing:
        pytest.skip(str(missing))
    waves = []
    for i, (voice, word) in enumerate(zip(voices * 2, ("dog", "chien", "scissors", "ciseaux"))):
        synthesise(voice, word, SpeechSettings(rate=160, pitch=40 + 10 * i), folder / f"{i}.wav")
        waves.append(sf.read(folder / f"{i}.wav", dtype="float32")[0])
    return waves


def assert_close(reference: list[np.ndarray], other: list[np.ndarray]) -> None:
    for ref, oth in zip(reference, other):
        assert oth.shape == ref.shape
        assert np.abs(oth - ref).max() < MAX_ABS
        assert np.linalg.norm(oth - ref) / np.linalg.norm(ref) < MAX_RELATIVE_L2


@pytest.mark.parametrize("source", ["speech-like", "espeak-ng"])
def test_final_layer_matches_ctranslate2(source, final, ctranslate2, tmp_path):
    waves = speech_like() if source == "speech-like" else spoken_words(tmp_path)
    assert_close(ctranslate2.encode(waves), final.encode(waves))
    assert final.fingerprint == ctranslate2.fingerprint  # the same weights file, hashed
    assert final.preprocessing != ctranslate2.preprocessing  # ... run by another engine: stores never mix


def test_hidden_states_are_transformers_own_on_a_full_window(final):
    """On exactly 30 s, WhisperEncoder.forward runs: its hidden_states are ours, the last after the layer norm."""
    mel = torch.from_numpy(final.log_mel(speech_like([30 * 16000])[0]))[None]
    with torch.inference_mode():
        theirs = final.model(mel, output_hidden_states=True)
        ours = hidden_states(final.model, mel, None)
    assert len(ours) == len(theirs.hidden_states) == 7
    for mine, reference in zip(ours, theirs.hidden_states):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours[-1], theirs.last_hidden_state, rtol=1e-5, atol=1e-4)


def test_every_layer_shapes_and_layer_equals_its_slice(every_layer, final, models_dir):
    waves = speech_like()
    stacked = every_layer.encode(waves)
    assert [s.shape for s in stacked] == [(50, 7, 512), (26, 7, 512), (16, 7, 512), (38, 7, 512), (2, 7, 512)]
    assert (every_layer.layers, every_layer.layer, every_layer.preprocessing["layer"]) == (tuple(range(7)), None,
                                                                                              list(range(7)))
    third = WhisperHFEncoder(models_dir, device="cpu", layer=3)
    assert third.preprocessing["layer"] == 3 and final.preprocessing["layer"] == "final"
    for ours, all_layers in zip(third.encode(waves), stacked):
        np.testing.assert_allclose(ours, all_layers[:, 3], rtol=1e-5, atol=1e-5)
    for ours, all_layers in zip(final.encode(waves), stacked):
        np.testing.assert_allclose(ours, all_layers[:, 6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(stacked[0][:, 3], stacked[0][:, 4])  # each layer its own state
    picked = WhisperHFEncoder(models_dir, device="cpu", layers=[5, 0]).encode(waves[:2])
    for ours, all_layers in zip(picked, stacked):
        np.testing.assert_allclose(ours, all_layers[:, [5, 0]], rtol=1e-5, atol=1e-5)


def test_padded_batch_equals_one_at_a_time(every_layer):
    waves = speech_like(seed=1)
    alone = [every_layer.encode([wave])[0] for wave in waves]
    assert_close(alone, every_layer.encode(waves))


@pytest.mark.parametrize("kwargs, message", [
    ({"layer": 7}, r"layer 7 out of range .* choose 0\.\.6"),
    ({"layer": -1}, r"layer -1 out of range"),
    ({"layers": [0, 9]}, r"layer 9 out of range"),
    ({"layers": "last"}, r"'all' or hidden-state indices 0\.\.6"),
    ({"layers": [2, 2]}, r"distinct"),
    ({"layers": []}, r"distinct"),
    ({"layer": 3, "layers": "all"}, r"not both"),
])
def test_unknown_layer_is_a_clear_error(kwargs, message, models_dir):
    with pytest.raises(EncoderUnavailable, match=message):
        WhisperHFEncoder(models_dir, device="cpu", **kwargs)


def test_bad_waveforms_are_refused(final):
    with pytest.raises(ValueError, match="shorter than one frame"):
        final.encode([np.zeros(319, np.float32)])
    with pytest.raises(ValueError, match="longer than Whisper's 30 s window"):
        final.encode([np.zeros(30 * 16000 + 1, np.float32)])


def test_cut_or_foreign_model_bin_is_named(final, models_dir, tmp_path):
    model_bin = models_dir / "whisper-base-ct2" / "model.bin"
    assert hashlib.sha256(model_bin.read_bytes()).hexdigest() == final.fingerprint
    cut = tmp_path / "model.bin"
    with open(model_bin, "rb") as source, open(cut, "wb") as out:
        out.write(source.read(1 << 20))
    with pytest.raises(ModelBinError, match=f"{cut}.*ends .* early.*assembled again"):
        read_model_bin(cut)
    cut.write_bytes((5).to_bytes(4, "little"))
    with pytest.raises(ModelBinError, match="binary version 5"):
        read_model_bin(cut)
    assert set(read_model_bin(model_bin, keep=lambda name: name.startswith("encoder/conv1")).variables) == {
        "encoder/conv1/weight", "encoder/conv1/bias"}


def test_reader_reads_what_ctranslate2_writes(tmp_path):
    """A tiny spec saved by CTranslate2's own writer: names, shapes, dtypes, values and aliases come back."""
    from ctranslate2.specs import model_spec

    class Dense(model_spec.LayerSpec):
        def __init__(self):
            self.weight = np.arange(6, dtype=np.float16).reshape(2, 3)
            self.bias = np.array([1.5, -2.0], dtype=np.float32)
            self.tied = np.arange(6, dtype=np.float16).reshape(2, 3)  # equal to weight: written as an alias

    class Tiny(model_spec.ModelSpec):
        def __init__(self):
            super().__init__()
            self.dense = Dense()
            self.count = np.int16(8)

        @property
        def name(self):
            return "TinySpec"

        @property
        def revision(self):
            return 2

    spec = Tiny()
    spec.validate()
    spec._alias_variables()
    spec._serialize(str(tmp_path / "model.bin"))
    found = read_model_bin(tmp_path / "model.bin")
    assert (found.spec, found.revision, found.aliases) == ("TinySpec", 2, {"dense/weight": "dense/tied"})
    assert {name: (t.dtype, tuple(t.shape)) for name, t in found.variables.items()} == {
        "count": (torch.int16, ()), "dense/bias": (torch.float32, (2,)), "dense/tied": (torch.float16, (2, 3))}
    assert found.variables["dense/tied"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert found.variables["dense/bias"].tolist() == [1.5, -2.0] and int(found.variables["count"]) == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp32_matches_cpu_and_auto_is_recorded(final, models_dir):
    """fp32 within 5e-3: cuDNN runs fp32 convolutions in TF32 by default (10-bit mantissa). bf16 within 0.1:
    bf16 autocast on this project's CPU moved the features by 2.0e-2 (worst word 4.1e-2, bench/whisper_hf.py)."""
    waves = speech_like()
    gpu = WhisperHFEncoder(models_dir, device="cuda", precision="fp32")
    assert gpu.device.type == "cuda" and gpu.precision == "fp32"
    for reference, ours in zip(final.encode(waves), gpu.encode(waves)):
        assert ours.shape == reference.shape
        assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 5e-3
    auto = WhisperHFEncoder(models_dir, device="cuda", layers="all")
    assert auto.precision in ("bf16", "fp16") and auto.preprocessing["compute"].startswith(f"torch {auto.precision}")
    for reference, half in zip(final.encode(waves), auto.encode(waves)):
        assert np.linalg.norm(half[:, 6] - reference) / np.linalg.norm(reference) < 0.1
