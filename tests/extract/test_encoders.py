"""Encoders: tiny HF models through the user's loading path, the offline pair with real weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extract.encoders.base import EncoderUnavailable
from extract.encoders.registry import load_encoder
from tests.extract.tiny_models import save_tiny_resnet, save_tiny_vit, save_tiny_wavlm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def wavlm(model_dir):
    return load_encoder(str(save_tiny_wavlm(model_dir / "tiny-wavlm")), device="cpu")


def waves(seed: int, lengths: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def test_wavlm_folder_loads_with_frames_at_50hz(wavlm):
    assert (wavlm.modality, wavlm.dim, wavlm.name) == ("audio", 32, "tiny-wavlm")
    assert wavlm.min_samples == 400  # the wav2vec2-family receptive field: 25 ms
    assert wavlm.preprocessing["frame_rate"] == 50.0
    assert wavlm.preprocessing["waveform_normalisation"] == "none"
    assert len(wavlm.fingerprint) == 64
    out = wavlm.encode(waves(0, [16000, 400]))
    assert [o.shape for o in out] == [(49, 32), (1, 32)]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)


def test_wavlm_padded_batch_equals_one_at_a_time(wavlm):
    # lengths chosen far apart, so padding is most of the short items: group-norm statistics and attention
    # would both see it if the masking were wrong
    batch = waves(1, [12000, 9000, 4100, 800])
    together = wavlm.encode(batch)
    for wave, frames in zip(batch, together):
        (alone,) = wavlm.encode([wave])
        assert frames.shape == alone.shape
        np.testing.assert_allclose(frames, alone, atol=2e-4, rtol=1e-4)


def test_wavlm_layer_selects_a_hidden_state(model_dir, wavlm):
    layer0 = load_encoder(str(model_dir / "tiny-wavlm"), layer=0, device="cpu")
    assert layer0.preprocessing["layer"] == 0 and layer0.fingerprint == wavlm.fingerprint
    wave = waves(2, [8000])
    assert not np.allclose(layer0.encode(wave)[0], wavlm.encode(wave)[0])
    with pytest.raises(EncoderUnavailable, match="layer 9 out of range"):
        load_encoder(str(model_dir / "tiny-wavlm"), layer=9, device="cpu")


def test_fingerprint_follows_the_weights(model_dir, wavlm):
    other = load_encoder(str(save_tiny_wavlm(model_dir / "other" / "tiny-wavlm", seed=1)), device="cpu")
    assert other.name == wavlm.name and other.fingerprint != wavlm.fingerprint


def test_resnet_folder_gives_the_final_map_as_64_positions(model_dir):
    enc = load_encoder(str(save_tiny_resnet(model_dir / "tiny-resnet")), modality="image", device="cpu")
    assert (enc.modality, enc.dim, enc.preprocessing["positions"], enc.preprocessing["image_size"]) == (
        "image", 64, 64, 256)  # hidden_sizes[-1] channels on an 8×8 map
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)),
              rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)]
    out = enc.encode(images)
    assert [o.shape for o in out] == [(64, 64), (64, 64)]
    np.testing.assert_allclose(enc.encode(images[1:])[0], out[1], atol=1e-5)  # batch-independent


def test_vit_folder_keeps_patch_tokens_at_256(model_dir):
    enc = load_encoder(str(save_tiny_vit(model_dir / "tiny-vit")), device="cpu")
    assert enc.modality == "image" and enc.dim == 32
    assert enc.preprocessing["positions"] == 256  # 16 × 16 patches, CLS dropped
    out = enc.encode([np.full((50, 50, 3), 200, np.uint8)])
    assert out[0].shape == (256, 32)


def test_modality_mismatch_is_refused(model_dir):
    with pytest.raises(EncoderUnavailable, match="audio model, but image"):
        load_encoder(str(save_tiny_wavlm(model_dir / "wavlm-mismatch")), modality="image", device="cpu")
    with pytest.raises(EncoderUnavailable, match="image encoder, but audio"):
        load_encoder("efficientnet-lite0", modality="audio")


def test_unreachable_hub_id_says_how_to_download(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    # huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE once, at import: set them where they are read
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(EncoderUnavailable) as caught:
        load_encoder("wavlm-base-plus", device="cpu")
    message = str(caught.value)
    assert "huggingface-cli download microsoft/wavlm-base-plus" in message
    assert "HF_HUB_OFFLINE=1" in message and "HF_HOME" in message and "folder" in message


def test_whisper_base_real_weights_50hz_512(tmp_path):
    enc = load_encoder("whisper-base", device="cpu", models_dir=tmp_path / "models")
    assert (enc.modality, enc.dim, enc.min_samples) == ("audio", 512, 320)
    batch = waves(3, [16000, 8100, 8000, 16000])  # two equal lengths: one CTranslate2 call for them
    out = enc.encode(batch)
    assert [o.shape for o in out] == [(50, 512), (26, 512), (25, 512), (50, 512)]
    np.testing.assert_allclose(enc.encode(batch[:1])[0], out[0], atol=1e-4)
    assert not np.allclose(out[0], out[3])  # different input, different frames: weights really run
    folder = tmp_path / "models" / "whisper-base-ct2"
    assert (folder / "model.bin").stat().st_size > 100e6 and enc.fingerprint in (folder / "model.bin.sha256").read_text()
    with pytest.raises(EncoderUnavailable, match="only its final layer"):
        load_encoder("whisper-base", layer=3, models_dir=tmp_path / "models")
    # CTranslate2 computes in its own types: the one it runs is recorded
    assert (enc.precision, enc.compute_type) == ("fp32", "float32")
    assert enc.preprocessing["compute"] == "ctranslate2 compute_type float32"
    with pytest.raises(EncoderUnavailable, match="cannot compute in bfloat16 on cpu"):
        load_encoder("whisper-base", device="cpu", precision="bf16", models_dir=tmp_path / "models")


def test_efficientnet_lite0_real_weights_64_positions():
    enc = load_encoder("efficientnet-lite0", device="cpu")
    assert (enc.modality, enc.dim, enc.preprocessing["positions"]) == ("image", 1280, 64)
    rng = np.random.default_rng(0)
    out = enc.encode([rng.integers(0, 255, (120, 90, 3), dtype=np.uint8), np.zeros((32, 32, 3), np.uint8)])
    assert [o.shape for o in out] == [(64, 1280), (64, 1280)]
    assert (out[0] >= 0).all() and (out[0] <= 6).all()  # after ReLU6: the final map, not logits


def test_efficientnet_lite0_preprocessing_recognises_a_photo():
    """The Lite normalisation + our resize feed the ImageNet weights what they were trained on: scikit-learn's
    sample photo of a daisy is classified as daisy (ImageNet class 985) by the network's own head."""
    import os

    import sklearn.datasets
    import torch

    from extract.encoders import efficientnet_lite
    from extract.encoders.base import resize_normalise

    enc = load_encoder("efficientnet-lite0", device="cpu")
    photo = Image.open(os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "flower.jpg"))
    pixels = resize_normalise([photo], efficientnet_lite.IMAGE_SIZE, efficientnet_lite.MEAN, efficientnet_lite.STD)
    with torch.inference_mode():
        logits = enc.model(pixels.contiguous(memory_format=torch.channels_last))
    assert int(logits.argmax()) == 985


def test_precision_auto_is_fp32_on_a_cpu_and_bf16_is_an_explicit_request(model_dir):
    folder = save_tiny_resnet(model_dir / "tiny-resnet-precision")
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    fp32 = load_encoder(str(folder), device="cpu")
    bf16 = load_encoder(str(folder), device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32.encode([image])[0], bf16.encode([image])[0]
    assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 really ran
    np.testing.assert_allclose(a, b, atol=0.1 * np.abs(a).max())
    for precision, message in [("fp16", "fp16 autocast is for CUDA GPUs"), ("fp64", "unknown precision")]:
        with pytest.raises(ValueError, match=message):
            load_encoder(str(folder), device="cpu", precision=precision)


def test_devices_are_resolved_by_the_project_rule(model_dir):
    folder = save_tiny_resnet(model_dir / "tiny-resnet-device")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        load_encoder(str(folder), device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            load_encoder(str(folder), device="cuda:0")
    assert str(load_encoder(str(folder), device="auto").device) == ("cuda" if torch.cuda.is_available() else "cpu")
