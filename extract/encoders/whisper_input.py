"""Whisper's input side, shared by the two whisper-base encoders (CTranslate2 and transformers).

Both must turn a word into the same numbers, so the frame count, the length checks and the log-mel live here
once. Each word is encoded on its own *unpadded* log-mel (Whisper normally sees 30 s windows; a 0.5 s word
padded to 30 s would cost 60× the compute and its frames would attend to 29.5 s of silence). The waveform is
first zero-padded to a multiple of 320 samples so that the encoder yields exactly ``ceil(n / 320)`` frames
(50 Hz): the mel hop is 160 samples and the second convolution has stride 2.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from extract.encoders.base import SAMPLE_RATE

HOP = 320  # samples per encoder frame: mel hop 160 × conv stride 2
MIN_SAMPLES = HOP  # a segment under 20 ms yields no full frame: treated as bad input
MAX_SAMPLES = 30 * SAMPLE_RATE  # Whisper's position table covers one 30 s window (1500 frames)


def frames(n_samples: int) -> int:
    """Encoder frames for a waveform of ``n_samples`` samples: ``ceil(n / 320)``, 0 below one frame."""
    return -(-n_samples // HOP) if n_samples >= MIN_SAMPLES else 0


def check_length(n_samples: int) -> None:
    """Refuse a waveform too short for one frame or longer than the 30 s the position table covers."""
    if n_samples < MIN_SAMPLES:
        raise ValueError(f"waveform of {n_samples} samples is shorter than one frame ({MIN_SAMPLES} samples)")
    if n_samples > MAX_SAMPLES:
        raise ValueError(f"waveform of {n_samples / SAMPLE_RATE:.1f} s is longer than Whisper's 30 s window: "
                         "is this segment really one word? Check its start/end")


class LogMel:
    """Whisper's log-mel (``WhisperFeatureExtractor``) of one waveform, without its padding to 30 s."""

    def __init__(self, n_mels: int):
        from transformers import WhisperFeatureExtractor

        self.extractor = WhisperFeatureExtractor(feature_size=n_mels)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """``(n_mels, 2 · frames(n))`` float32 for a mono 16 kHz waveform of ``n`` samples."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        padded = np.pad(wave, (0, frames(len(wave)) * HOP - len(wave)))
        features = self.extractor(padded, sampling_rate=SAMPLE_RATE, padding=False, return_tensors="np")
        return features.input_features[0]


def input_preprocessing() -> dict[str, Any]:
    """The provenance entries that describe this input (the same for both encoders)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "frame_rate": SAMPLE_RATE / HOP,
        "hop_samples": HOP,
        "min_samples": MIN_SAMPLES,
        "waveform_normalisation": "none",
        "input": "unpadded 80-bin log-mel of the word (WhisperFeatureExtractor), waveform zero-padded "
        "to a multiple of 320 samples",
        "frames": "ceil(n_samples / 320)",
    }


def batch_mels(log_mel: LogMel, batch: Sequence[np.ndarray]) -> tuple[list[int], list[np.ndarray]]:
    """Each waveform's length in samples (checked: too short or too long is refused) and its log-mel, the
    input both Whisper engines start from."""
    lengths = [len(np.asarray(wave).reshape(-1)) for wave in batch]
    for n in lengths:
        check_length(n)
    return lengths, [log_mel(wave) for wave in batch]
