"""Hugging Face encoders: any hub id or local folder of the WavLM / HuBERT / wav2vec2 (audio) and
ResNet / ViT / DINOv2 (image) families, loaded with ``AutoModel.from_pretrained``.

Loading goes through transformers, so ``HF_HUB_OFFLINE``, ``HF_HOME`` and the HF cache behave as users expect;
a model that is neither cached nor reachable gives one :class:`EncoderUnavailable` message saying how to get it.

Audio batching: items are zero-padded to the longest in the batch and an attention mask hides the padding from
the transformer. The base-size models (``feat_extract_norm == "group"``, WavLM base-plus among them) also
normalise their first convolution's output over *time*; with padding those statistics would include the
padded zeros and every frame would change. :class:`MaskedGroupNorm` computes them over each item's valid frames
only, so a padded batch gives the frames one-at-a-time extraction gives (tested).
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from extract.encoders.base import (
    SAMPLE_RATE,
    EncoderUnavailable,
    resize_normalise,
    resolve_compute,
    sha256_state_dict,
)

log = logging.getLogger(__name__)

AUDIO_TYPES = frozenset({"wavlm", "hubert", "wav2vec2", "data2vec-audio"})
IMAGE_TYPES = frozenset({"resnet", "vit", "deit", "dinov2", "dinov2_with_registers"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 256  # the paper's 256×256 resize without crop: ResNet-50 → 8×8 = 64 positions
DINOV2_IMAGE_SIZE = 224  # patch 14: 224 → 16×16 = 256 patches (256 would leave a 4-pixel remainder)


def unavailable_message(name_or_path: str, error: Exception) -> str:
    """The one message for a model that cannot be loaded: what failed and the two ways to fix it."""
    if Path(name_or_path).expanduser().exists():
        return (
            f"encoder folder {name_or_path!r} cannot be loaded by transformers ({error}). It must hold the "
            "config.json and weights written by save_pretrained (plus preprocessor_config.json for audio models)."
        )
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE  # read once by huggingface_hub at import, from HF_HUB_OFFLINE
    why = "the hub is off (HF_HUB_OFFLINE=1)" if offline else "the Hugging Face hub cannot be reached"
    return (
        f"encoder {name_or_path!r} is not in the local Hugging Face cache and {why}. Download it once on a "
        f"networked machine: `huggingface-cli download {name_or_path}` (or `hf download {name_or_path}`), then "
        "copy that cache here and point HF_HOME at it; or save the model to a folder (`save_pretrained`) and "
        "pass the folder's path as the encoder. Offline, the installed pair whisper-base / efficientnet-lite0 "
        "needs no download."
    )


def load_config(name_or_path: str) -> Any:
    """``AutoConfig`` for a hub id or folder, with unreachable/missing models turned into EncoderUnavailable."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise EncoderUnavailable(unavailable_message(name_or_path, error)) from error


def load_model(name_or_path: str, model_type: str) -> nn.Module:
    """The bare backbone, frozen, fp32, eval mode.

    ViT/DeiT are loaded without their pooler: it is not used here, and asking ``AutoModel`` for it on a
    checkpoint saved without one would initialise it at random (and print a warning about it).
    """
    from transformers import AutoModel

    kwargs = {"add_pooling_layer": False} if model_type in ("vit", "deit") else {}
    try:
        model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as error:
        raise EncoderUnavailable(unavailable_message(name_or_path, error)) from error
    model.eval()
    model.requires_grad_(False)
    return model


def display_name(name_or_path: str) -> str:
    """Hub ids are kept as is; a local folder is named by its last component (the store name uses it)."""
    path = Path(name_or_path).expanduser()
    return path.resolve().name if path.exists() else name_or_path


class MaskedGroupNorm(nn.Module):
    """``nn.GroupNorm`` over (B, C, T) whose statistics use only each item's first ``valid_lengths[b]`` steps.

    With ``valid_lengths`` unset it is exactly the wrapped GroupNorm. The outputs at padded steps are
    computed with the item's statistics too; they only ever feed frames that are dropped.
    """

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm
        self.valid_lengths: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.valid_lengths is None:
            return self.norm(x)
        batch, channels, steps = x.shape
        groups = self.norm.num_groups
        grouped = x.float().reshape(batch, groups, channels // groups, steps)
        mask = (torch.arange(steps, device=x.device)[None, :] < self.valid_lengths[:, None]).to(grouped.dtype)
        mask = mask[:, None, None, :]
        count = mask.sum(dim=-1, keepdim=True).clamp_min(1) * (channels // groups)
        mean = (grouped * mask).sum(dim=(-2, -1), keepdim=True) / count
        var = (((grouped - mean) ** 2) * mask).sum(dim=(-2, -1), keepdim=True) / count
        normed = ((grouped - mean) / torch.sqrt(var + self.norm.eps)).reshape(batch, channels, steps)
        if self.norm.affine:
            normed = normed * self.norm.weight[None, :, None] + self.norm.bias[None, :, None]
        return normed.to(x.dtype)


class HFAudioEncoder:
    """WavLM / HuBERT / wav2vec2: 16 kHz waveform → (frames, hidden) at the model's frame rate (50 Hz)."""

    modality = "audio"

    def __init__(self, name_or_path: str, config: Any, layer: int | None, device: str, precision: str = "auto",
                 layers: Sequence[int] | str | None = None):
        from transformers import AutoFeatureExtractor

        self.source = name_or_path
        self.name = display_name(name_or_path)
        self.compute = resolve_compute(device, precision)
        self.device = self.compute.device
        self.precision = self.compute.precision.name
        try:
            extractor = AutoFeatureExtractor.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise EncoderUnavailable(
                f"{name_or_path!r} has no usable preprocessor_config.json ({error}); audio models need it "
                "(save the model's feature extractor next to it with save_pretrained)"
            ) from error
        if extractor.sampling_rate != SAMPLE_RATE:
            raise EncoderUnavailable(f"{name_or_path!r} expects {extractor.sampling_rate} Hz audio; vgsme feeds 16 kHz")
        self.do_normalize = bool(getattr(extractor, "do_normalize", False))
        self.kernels = list(config.conv_kernel)
        self.strides = list(config.conv_stride)
        self.layer = check_layer(layer, config.num_hidden_layers, name_or_path)
        self.layers = resolve_layers(layers, config.num_hidden_layers, name_or_path)
        if self.layer is not None and self.layers is not None:
            raise EncoderUnavailable("give --layer (one hidden state) or --layers (several), not both")
        self.dim = int(config.hidden_size)
        self.min_samples = min_input_length(self.kernels, self.strides)
        model = load_model(name_or_path, config.model_type)
        self.fingerprint = sha256_state_dict(model)
        self.masked_norm = install_masked_group_norm(model) if config.feat_extract_norm == "group" else None
        self.model = model.to(self.device)
        hop = int(np.prod(self.strides))
        self.preprocessing = {
            "model_type": config.model_type,
            "sample_rate": SAMPLE_RATE,
            "frame_rate": SAMPLE_RATE / hop,
            "hop_samples": hop,
            "min_samples": self.min_samples,
            "waveform_normalisation": "zero-mean unit-variance per item" if self.do_normalize else "none",
            "layer": layer_description(self.layer, self.layers),
            "batching": "length-sorted, zero-padded, attention mask, per-item group-norm statistics",
        }

    def frames(self, n_samples: int) -> int:
        """Frames the convolutional front end yields for ``n_samples`` samples (0 below ``min_samples``)."""
        return conv_output_length(n_samples, self.kernels, self.strides)

    def encode(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        waves = [np.asarray(wave, dtype=np.float32).reshape(-1) for wave in batch]
        lengths = [len(wave) for wave in waves]
        for n in lengths:
            if n < self.min_samples:
                raise ValueError(f"waveform of {n} samples is shorter than one frame ({self.min_samples} samples)")
        values = np.zeros((len(waves), max(lengths)), dtype=np.float32)
        for i, wave in enumerate(waves):
            if self.do_normalize:
                wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
            values[i, : len(wave)] = wave
        input_values = torch.from_numpy(values).to(self.device)
        mask = (torch.arange(values.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long().to(self.device)
        first_conv = torch.tensor([conv_output_length(n, self.kernels[:1], self.strides[:1]) for n in lengths])
        with self.group_norm_lengths(first_conv.to(self.device)), torch.inference_mode(), self.compute.autocast():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*key_padding_mask.*")  # harmless torch notice
                out = self.model(
                    input_values, attention_mask=mask,
                    output_hidden_states=self.layer is not None or self.layers is not None,
                )
        if self.layers is not None:  # (B, T, L, D): the layer axis after time, as the store lays it out
            hidden = torch.stack([out.hidden_states[k] for k in self.layers], dim=2)
        else:
            hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        hidden = hidden.float().cpu().numpy()
        return [hidden[i, : self.frames(n)].copy() for i, n in enumerate(lengths)]

    @contextmanager
    def group_norm_lengths(self, lengths: torch.Tensor) -> Iterator[None]:
        if self.masked_norm is None:
            yield
            return
        self.masked_norm.valid_lengths = lengths
        try:
            yield
        finally:
            self.masked_norm.valid_lengths = None


class HFImageEncoder:
    """ResNet / ViT / DINOv2: RGB image → (positions, hidden).

    ResNet: the final feature map, flattened row-major (8×8 = 64 positions at 256). ViT / DINOv2: the patch
    tokens; the CLS (and register) tokens are dropped, because the pooling head brings its own CLS and the
    positions should be image regions, as for the ResNet map.
    """

    modality = "image"
    min_samples = 0

    def __init__(
        self,
        name_or_path: str,
        config: Any,
        layer: int | None,
        device: str,
        image_size: int | None = None,
        mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
        precision: str = "auto",
        layers: Sequence[int] | str | None = None,
    ):
        if layers is not None:
            raise EncoderUnavailable(f"{name_or_path!r}: image stores hold one layer (the pooling head reads a "
                                     "map of positions); drop --layers, or pick one with --layer N")
        self.layers = None
        self.source = name_or_path
        self.name = display_name(name_or_path)
        self.compute = resolve_compute(device, precision)
        self.device = self.compute.device
        self.precision = self.compute.precision.name
        self.model_type = config.model_type
        n_layers = len(config.depths) if self.model_type == "resnet" else config.num_hidden_layers
        self.layer = check_layer(layer, n_layers, name_or_path)
        self.image_size = image_size or (DINOV2_IMAGE_SIZE if self.model_type.startswith("dinov2") else DEFAULT_IMAGE_SIZE)
        self.mean, self.std = mean_std or processor_mean_std(name_or_path)
        self.leading_tokens = 0 if self.model_type == "resnet" else 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        model = load_model(name_or_path, self.model_type)
        self.fingerprint = sha256_state_dict(model)
        self.model = model.to(self.device)
        probe = self.encode([np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)])[0]
        self.positions, self.dim = probe.shape
        self.preprocessing = {
            "model_type": self.model_type,
            "image_size": self.image_size,
            "resize": "bilinear to a square, no crop",
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "positions": self.positions,
            "tokens": "feature map, row-major" if self.model_type == "resnet" else "patch tokens (CLS/registers dropped)",
            "layer": "final" if self.layer is None else self.layer,
        }

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        pixels = resize_normalise(batch, self.image_size, self.mean, self.std).to(self.device)
        kwargs: dict[str, Any] = {"output_hidden_states": self.layer is not None}
        if self.model_type in ("vit", "deit"):
            kwargs["interpolate_pos_encoding"] = True  # 256 input on a 224-trained ViT
        with torch.inference_mode(), self.compute.autocast():
            out = self.model(pixel_values=pixels, **kwargs)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        if hidden.ndim == 4:  # ResNet map (B, C, H, W) → (B, H·W, C)
            hidden = hidden.flatten(2).transpose(1, 2)
        else:
            hidden = hidden[:, self.leading_tokens :]
        hidden = hidden.float().cpu().numpy()
        return [hidden[i].copy() for i in range(len(hidden))]


def processor_mean_std(name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation in the model's image-processor config, or ImageNet's when it has none."""
    from transformers.image_processing_utils import ImageProcessingMixin

    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path)
    except (OSError, ValueError):
        return IMAGENET_MEAN, IMAGENET_STD
    mean, std = config.get("image_mean"), config.get("image_std")
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def check_layer(layer: int | None, n_layers: int, name_or_path: str) -> int | None:
    """``None`` = final output; ``0..n_layers`` index ``hidden_states`` (0 = the input embeddings)."""
    if layer is None:
        return None
    if not 0 <= layer <= n_layers:
        raise EncoderUnavailable(f"layer {layer} out of range for {name_or_path!r}: choose 0..{n_layers}")
    return layer


def resolve_layers(layers: Sequence[int] | str | None, n_layers: int, name_or_path: str) -> tuple[int, ...] | None:
    """``"all"`` → every hidden state ``0..n_layers`` (0 = the input embeddings); a list → those, sorted,
    each checked; ``None`` → None (one layer). Fewer than two layers is not a layer axis: use ``--layer``."""
    if layers is None:
        return None
    if isinstance(layers, str):
        if layers.strip().lower() != "all":
            raise EncoderUnavailable(f"--layers {layers!r}: give 'all' or layer numbers (e.g. 0 6 12)")
        return tuple(range(n_layers + 1))
    chosen = sorted({int(v) for v in layers})
    bad = [v for v in chosen if not 0 <= v <= n_layers]
    if bad:
        raise EncoderUnavailable(f"layers {', '.join(map(str, bad))} out of range for {name_or_path!r}: "
                                 f"choose within 0..{n_layers} (or --layers all)")
    if len(chosen) < 2:
        raise EncoderUnavailable(f"--layers {' '.join(map(str, chosen))}: a layer axis needs two layers or more; "
                                 "for one hidden state use --layer N")
    return tuple(chosen)


def layer_description(layer: int | None, layers: tuple[int, ...] | None) -> Any:
    """The ``layer`` entry of the preprocessing record: ``final``, the index, or the list of a layer axis."""
    if layers is not None:
        return list(layers)
    return "final" if layer is None else layer


def conv_output_length(n: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Output length of a stack of unpadded 1-D convolutions (the wav2vec2-family front end)."""
    for kernel, stride in zip(kernels, strides):
        if n < kernel:
            return 0
        n = (n - kernel) // stride + 1
    return n


def min_input_length(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """The shortest input giving one output frame (400 samples = 25 ms for the wav2vec2-family stack)."""
    n = 1
    for kernel, stride in reversed(list(zip(kernels, strides))):
        n = (n - 1) * stride + kernel
    return n


def install_masked_group_norm(model: nn.Module) -> MaskedGroupNorm:
    """Swap the first conv layer's GroupNorm for a :class:`MaskedGroupNorm` (same weights) and return it."""
    first = model.feature_extractor.conv_layers[0]
    if not isinstance(first.layer_norm, nn.GroupNorm):
        raise EncoderUnavailable(f"unexpected first conv layer {type(first).__name__}: no GroupNorm to mask")
    first.layer_norm = MaskedGroupNorm(first.layer_norm)
    return first.layer_norm


def load_hf_encoder(
    name_or_path: str,
    modality: str | None = None,
    layer: int | None = None,
    device: str = "auto",
    image_size: int | None = None,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    precision: str = "auto",
    layers: Sequence[int] | str | None = None,
) -> HFAudioEncoder | HFImageEncoder:
    """Load a supported HF model; the family (from config.json) decides audio or image. ``layers``
    (``"all"`` or indices) stores several hidden states along a layer axis (audio only)."""
    config = load_config(name_or_path)
    model_type = config.model_type
    if model_type in AUDIO_TYPES:
        found = "audio"
    elif model_type in IMAGE_TYPES:
        found = "image"
    else:
        raise EncoderUnavailable(
            f"{name_or_path!r} is a {model_type!r} model; supported: audio {sorted(AUDIO_TYPES)}, "
            f"image {sorted(IMAGE_TYPES)}"
        )
    if modality is not None and modality != found:
        raise EncoderUnavailable(f"{name_or_path!r} is an {found} model, but {modality} features were asked for")
    if found == "audio":
        return HFAudioEncoder(name_or_path, config, layer, device, precision, layers=layers)
    return HFImageEncoder(name_or_path, config, layer, device, image_size=image_size, mean_std=mean_std,
                          precision=precision, layers=layers)
