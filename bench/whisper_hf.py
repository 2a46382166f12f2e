"""whisper-base-hf (transformers) against whisper-base (CTranslate2) on spoken words: agreement, padding, speed.

    python bench/whisper_hf.py                      # 48 demo words spoken by the demo's voices, CPU
    python bench/whisper_hf.py --words 96 --batch-size 32 --precision fp32 bf16
    python bench/whisper_hf.py --device cuda        # the GPU path (CTranslate2 on the GPU too)

The words are the demo corpus's (English, French, Dutch) spoken by its voices (espeak-ng / MBROLA / Piper,
those installed here), as the demo builder speaks them. Printed:
- *agreement*: each word encoded alone by both encoders, final layer; max abs and relative L2 difference
  (over all frames of all words, and the worst word), with the float16 store's own rounding for scale;
- *padding*: a length-sorted batch encoded at once vs each word alone. whisper-base-hf pads the mel and masks
  the padded frames; CTranslate2 has no mask, so its padded batch is shown for what grouping by equal length
  avoids (its mel zero-padded to the batch's longest); and whisper-base-hf's modules without the mask;
- with several ``--precision``: whisper-base-hf's features in each against the first's;
- *speed*: the bare ``encode`` time over the same length-sorted batches (inputs in memory), as seconds of
  audio per second and milliseconds per second of audio: the median of ``--repeats`` passes in which the
  encoders take turns, and each one's median speed ratio to the first within a pass, with the 1-minute load
  average. On a shared machine whose cores are oversubscribed, torch's OpenMP threads slow down far more
  than CTranslate2's: compare ``OMP_NUM_THREADS=1`` (both encoders follow it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from cache.hardware import PRECISIONS, machine_record  # noqa: E402
from extract.demo.concepts import CONCEPTS, VOICES  # noqa: E402
from extract.demo.voices import SpeechSettings, SpeechToolsMissing, check_speech_tools, synthesise  # noqa: E402
from extract.encoders.base import SAMPLE_RATE, EncoderUnavailable  # noqa: E402
from extract.encoders.whisper_ct2 import WhisperCT2Encoder  # noqa: E402
from extract.encoders.whisper_hf import WhisperHFEncoder, hidden_states  # noqa: E402
from extract.encoders.whisper_input import frames  # noqa: E402


def spoken_words(n: int, folder: Path) -> list[np.ndarray]:
    """``n`` demo words, cycling over concepts and the voices installed here, as 16 kHz float32."""
    voices = []
    for voice in VOICES:
        try:
            check_speech_tools([voice])
            voices.append(voice)
        except SpeechToolsMissing:
            continue
    if not voices:
        raise SystemExit("no speech synthesiser installed here (espeak-ng, sox; see extract/demo/voices.py)")
    waves = []
    for i in range(n):
        voice, concept = voices[i % len(voices)], CONCEPTS[i % len(CONCEPTS)]
        path = folder / f"{i}.wav"
        synthesise(voice, concept.words[voice.lang], SpeechSettings(rate=150 + 10 * (i % 5), pitch=50), path)
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SAMPLE_RATE
        waves.append(audio)
    return sorted(waves, key=len)


def differences(reference: list[np.ndarray], other: list[np.ndarray]) -> str:
    """Max abs and relative L2 difference over all frames, and the worst item's relative L2."""
    ref, oth = np.concatenate(reference), np.concatenate(other)
    worst = max(np.linalg.norm(o - r) / np.linalg.norm(r) for r, o in zip(reference, other))
    return (f"max abs {np.abs(oth - ref).max():.2e} (features' max |x| {np.abs(ref).max():.1f}), "
            f"relative L2 {np.linalg.norm(oth - ref) / np.linalg.norm(ref):.2e}, worst word {worst:.2e}")


def batched(waves: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    return [waves[i: i + size] for i in range(0, len(waves), size)]


def ct2_padded(encoder: WhisperCT2Encoder, batch: list[np.ndarray]) -> list[np.ndarray]:
    """CTranslate2 on one batch padded to its longest mel (what grouping by length avoids)."""
    mels = [encoder.log_mel(wave) for wave in batch]
    stacked = np.zeros((len(mels), mels[0].shape[0], max(m.shape[1] for m in mels)), dtype=np.float32)
    for i, mel in enumerate(mels):
        stacked[i, :, : mel.shape[1]] = mel
    out = np.asarray(encoder.model.encode(encoder.storage_view.from_array(stacked), to_cpu=True), dtype=np.float32)
    return [out[i, : frames(len(wave))] for i, wave in enumerate(batch)]


def hf_unmasked(encoder: WhisperHFEncoder, batch: list[np.ndarray]) -> list[np.ndarray]:
    """whisper-base-hf's modules on one padded batch without the key-padding mask."""
    mels = [encoder.log_mel(wave) for wave in batch]
    stacked = np.zeros((len(mels), mels[0].shape[0], max(m.shape[1] for m in mels)), dtype=np.float32)
    for i, mel in enumerate(mels):
        stacked[i, :, : mel.shape[1]] = mel
    with torch.inference_mode(), encoder.compute.autocast():
        out = hidden_states(encoder.model, torch.from_numpy(stacked).to(encoder.device), None)[-1]
    out = out.float().cpu().numpy()
    return [out[i, : frames(len(wave))] for i, wave in enumerate(batch)]


def report_speed(encoders: list[tuple[str, Any]], batches: list[list[np.ndarray]], audio_s: float,
                 repeats: int) -> None:
    """Time one pass per encoder per repeat, the encoders taking turns, so that a shared machine's changing load
    hits all of them alike; print each one's median and its median ratio to the first's within a repeat."""
    for _, encoder in encoders:  # warm-up over every batch shape: first-call allocations, kernel choices
        for batch in batches:
            encoder.encode(batch)
    times: dict[str, list[float]] = {name: [] for name, _ in encoders}
    loads = []
    for _ in range(repeats):
        for name, encoder in encoders:
            start = time.perf_counter()
            for batch in batches:
                encoder.encode(batch)
            times[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    first = encoders[0][0]
    print(f"speed, median of {repeats} interleaved passes (1-minute load average {min(loads):.1f}-{max(loads):.1f}):")
    for name, _ in encoders:
        seconds = statistics.median(times[name])
        ratio = statistics.median(a / b for a, b in zip(times[first], times[name]))
        print(f"  {name:38s} {audio_s / seconds:6.1f} s of audio per s, {1000 * seconds / audio_s:6.1f} ms per s "
              f"of audio, {ratio:4.2f}x the speed of {first}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=48, help="spoken words to encode")
    parser.add_argument("--batch-size", type=int, default=16, help="words per encode call (length-sorted)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] for both encoders")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                        help="precision(s) to time both encoders in (agreement and padding use the first)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the words per encoder (median reported)")
    args = parser.parse_args()
    print(f"machine: {machine_record(args.device)}; torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        waves = spoken_words(args.words, Path(tmp))
        audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
        print(f"{len(waves)} words, {audio_s:.1f} s of audio ({audio_s / len(waves):.2f} s per word), "
              f"batch {args.batch_size}", flush=True)
        batches = batched(waves, args.batch_size)
        timed: list[tuple[str, Any]] = []
        for number, precision in enumerate(args.precision):
            hf = WhisperHFEncoder(models, device=args.device, precision=precision)
            try:
                ct2 = WhisperCT2Encoder(models, device=args.device, precision=precision)
            except EncoderUnavailable as error:
                print(f"--- {precision}: whisper-base-hf {hf.preprocessing['compute']}; whisper-base: {error}")
                ct2 = None
            else:
                print(f"--- {precision}: whisper-base {ct2.preprocessing['compute']}, "
                      f"whisper-base-hf {hf.preprocessing['compute']}")
            if number == 0:
                if ct2 is None:
                    raise SystemExit(f"the first --precision must be one whisper-base runs in on {args.device}")
                ct2_alone = [ct2.encode([w])[0] for w in waves]
                hf_alone = [hf.encode([w])[0] for w in waves]
                rounded = [a.astype(np.float16).astype(np.float32) for a in ct2_alone]
                print(f"agreement, whisper-base-hf vs whisper-base, each word alone: {differences(ct2_alone, hf_alone)}")
                print(f"  for scale, float16 storage of whisper-base's features: {differences(ct2_alone, rounded)}")
                hf_batched = [f for batch in batches for f in hf.encode(batch)]
                ct2_batched = [f for batch in batches for f in ct2.encode(batch)]
                print(f"padding, whisper-base-hf batch (mask) vs alone: {differences(hf_alone, hf_batched)}")
                print(f"  whisper-base batch (equal-length groups) vs alone: {differences(ct2_alone, ct2_batched)}")
                padded = [f for batch in batches for f in ct2_padded(ct2, batch)]
                print(f"  whisper-base, mel zero-padded, no mask, vs alone: {differences(ct2_alone, padded)}")
                unmasked = [f for batch in batches for f in hf_unmasked(hf, batch)]
                print(f"  whisper-base-hf modules without the mask vs alone: {differences(hf_alone, unmasked)}")
                first = hf_batched
            else:
                ours = [f for batch in batches for f in hf.encode(batch)]
                print(f"whisper-base-hf {precision} vs {args.precision[0]}: {differences(first, ours)}")
            if ct2 is not None:
                timed.append((f"whisper-base (CTranslate2) {precision}", ct2))
            timed.append((f"whisper-base-hf (transformers) {precision}", hf))
        report_speed(timed, batches, audio_s, args.repeats)


if __name__ == "__main__":
    main()
