"""Reading one spoken word: decode only its segment, downmix to mono, resample to the encoder's rate.

No loudness or mean/variance normalisation happens here: WavLM's preprocessor has
``do_normalize=False`` and the paper feeds raw 16 kHz waveforms; an encoder that wants normalised input
does it itself.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile
import soxr

from extract.corpus import DURATION_TOLERANCE_S, AudioItem, MediaError
from extract.wavheader import wav_truncation

# Recorded by the extraction in each store's provenance: features of resampled audio depend on it.
RESAMPLER = "soxr-hq"
_SOXR_QUALITY = "HQ"


def read_segment(item: AudioItem, target_sr: int = 16000, min_samples: int = 0) -> np.ndarray:
    """The samples of ``item`` (its ``[start, end)`` seconds, or the whole file) as float32 mono at
    ``target_sr`` Hz.

    ``min_samples`` is the encoder's shortest input at ``target_sr`` (e.g. 400 samples = one 25 ms
    WavLM frame): a shorter segment would give no frame at all, so it is refused here with the item
    named rather than failing inside a batch. Raises :class:`MediaError` for a missing, unreadable or
    truncated file, a segment outside the file, an empty or too-short segment and non-finite samples.
    """
    path = os.fspath(item.path)
    if not os.path.isfile(path):
        raise MediaError(item.id, path, "file not found",
                         "restore the file or correct its path in audio.csv")
    truncation = wav_truncation(path)  # libsndfile would silently read what is left of a cut WAV
    if truncation is not None:
        raise MediaError(item.id, path, str(truncation), "replace the file with a complete copy")
    try:
        with soundfile.SoundFile(path) as f:
            rate, total = f.samplerate, f.frames
            first = 0 if item.start is None else round(item.start * rate)
            if item.start is not None and first >= total > 0:
                raise MediaError(item.id, path, f"segment starts at {item.start} s, at or past the end of the "
                                 f"file's {total / rate:.3f} s", "fix start in audio.csv, or replace the file")
            last = total if item.end is None else round(item.end * rate)
            if last > total:
                if last > total + DURATION_TOLERANCE_S * rate:
                    raise MediaError(item.id, path, f"segment ends at {item.end} s, beyond the file's "
                                     f"{total / rate:.3f} s",
                                     "fix end in audio.csv, or replace the file if it is truncated")
                last = total  # alignment rounding a few ms past the end
            if last <= first:
                raise MediaError(item.id, path, f"empty segment (frames {first}..{last} of {total})",
                                 "fix start/end in audio.csv or replace the file")
            f.seek(first)
            samples = f.read(last - first, dtype="float32", always_2d=True)
    except MediaError:
        raise
    except Exception as e:  # libsndfile's own words say what is wrong with the file
        raise MediaError(item.id, path, f"unreadable audio: {' '.join(str(e).split()) or type(e).__name__}",
                         "replace the file with a readable WAV/FLAC/OGG") from e
    if len(samples) < last - first:
        raise MediaError(item.id, path, f"truncated file: the header promises {last - first} frames for the "
                         f"segment but only {len(samples)} could be read", "replace the file with a complete copy")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    bad = np.count_nonzero(~np.isfinite(mono))
    if bad:
        raise MediaError(item.id, path, f"{bad} of {len(mono)} samples are NaN or infinite",
                         "replace the file (a float WAV with NaN poisons every feature of the item)")
    if rate != target_sr:
        mono = soxr.resample(mono, rate, target_sr, quality=_SOXR_QUALITY).astype(np.float32, copy=False)
    if len(mono) < max(min_samples, 1):
        raise MediaError(item.id, path, f"segment too short: {len(mono)} samples at {target_sr} Hz "
                         f"({1000 * len(mono) / target_sr:.1f} ms), the encoder needs at least {min_samples} "
                         f"({1000 * min_samples / target_sr:.1f} ms)",
                         "widen start/end in audio.csv or drop the row (or use --skip-bad)")
    return np.ascontiguousarray(mono)


def segment_seconds(item: AudioItem) -> float:
    """The duration of an item's segment from the file header alone (to sort a batch by length)."""
    if item.start is not None and item.end is not None:
        return item.end - item.start
    info = soundfile.info(os.fspath(item.path))
    duration = info.frames / info.samplerate
    return min(duration, item.end if item.end is not None else duration) - (item.start or 0.0)
