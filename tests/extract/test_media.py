"""Media readers: the right samples of a segment, resampling to 16 kHz, RGB on white, and every MediaError."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from extract.audio import RESAMPLER, read_segment, segment_seconds
from extract.corpus import AudioItem, ImageItem, MediaError, load_corpus
from extract.image import read_image
from tests.extract.corpus_fixtures import write_tiny_corpus


def audio_item(path: Path, start=None, end=None, item_id="w1") -> AudioItem:
    return AudioItem(item_id, "en", "dog", path, start, end, "spk", "synth", "train")


def image_item(path: Path, item_id="i1") -> ImageItem:
    return ImageItem(item_id, "dog", path, "drawn", "test")


def ramp_wav(path: Path, rate=16000, seconds=1.0, channels=1, subtype="FLOAT") -> np.ndarray:
    """A file whose sample k is k / n: a segment's values say exactly which samples were read."""
    n = int(rate * seconds)
    samples = (np.arange(n, dtype=np.float32) / n)
    data = np.stack([samples] * channels, axis=1) if channels > 1 else samples
    soundfile.write(path, data, rate, subtype=subtype)
    return samples


# ---------------------------------------------------------------------------------------------- audio


def test_segment_cuts_exactly_the_requested_samples(tmp_path):
    samples = ramp_wav(tmp_path / "u.wav")
    x = read_segment(audio_item(tmp_path / "u.wav", 0.25, 0.5))
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, samples[4000:8000])
    np.testing.assert_array_equal(read_segment(audio_item(tmp_path / "u.wav")), samples)
    np.testing.assert_array_equal(read_segment(audio_item(tmp_path / "u.wav", start=0.75)), samples[12000:])
    np.testing.assert_array_equal(read_segment(audio_item(tmp_path / "u.wav", end=0.1)), samples[:1600])
    # an end a few ms past the file (alignment rounding) is clamped to the file
    np.testing.assert_array_equal(read_segment(audio_item(tmp_path / "u.wav", 0.9, 1.003)), samples[14400:])
    assert segment_seconds(audio_item(tmp_path / "u.wav", 0.25, 0.5)) == pytest.approx(0.25)
    assert segment_seconds(audio_item(tmp_path / "u.wav", start=0.75)) == pytest.approx(0.25)


def test_stereo_is_downmixed(tmp_path):
    path = tmp_path / "st.wav"
    left = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(read_segment(audio_item(path)), left / 2, atol=1e-7)


def test_22050_hz_is_resampled_to_16k_with_the_right_length_and_pitch(tmp_path):
    path = tmp_path / "hi.wav"
    rate, seconds, freq = 22050, 0.5, 440.0
    t = np.arange(int(rate * seconds)) / rate
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="FLOAT")
    x = read_segment(audio_item(path))
    assert abs(len(x) - 8000) <= 1 and x.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert np.fft.rfftfreq(len(x), 1 / 16000)[spectrum.argmax()] == pytest.approx(freq, abs=4)
    cut = read_segment(audio_item(path, 0.1, 0.3))
    assert abs(len(cut) - 3200) <= 1
    assert RESAMPLER == "soxr-hq"


def test_fixture_language_at_22050_reads_at_16k(tmp_path):
    corpus = load_corpus(write_tiny_corpus(tmp_path / "c", familiar=1, novel=0, lang_sample_rates={"fr": 22050}))
    fr = corpus.audio_of("fr")[0]
    assert soundfile.info(fr.path).samplerate == 22050
    assert abs(len(read_segment(fr)) - round(soundfile.info(fr.path).frames * 16000 / 22050)) <= 1


def test_missing_file(tmp_path):
    with pytest.raises(MediaError) as info:
        read_segment(audio_item(tmp_path / "gone.wav", item_id="en-dog-7"))
    assert str(info.value) == (f"item 'en-dog-7' ({tmp_path / 'gone.wav'}): file not found; "
                               "fix: restore the file or correct its path in audio.csv")
    assert info.value.item_id == "en-dog-7" and info.value.path == tmp_path / "gone.wav"


def test_corrupt_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(MediaError, match=r"item 'w1' .*junk.wav\): unreadable audio: .*fix: replace the file"):
        read_segment(audio_item(junk))
    whole = tmp_path / "whole.wav"
    ramp_wav(whole, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:20000])  # header promises 1 s, data holds ~0.6 s
    # libsndfile sizes a short WAV by its data and reads it silently: the header's data size says it is cut,
    # wherever the segment lies
    for start, end in ((0.7, 0.9), (0.1, 0.3), (None, None)):
        with pytest.raises(MediaError, match=r"item 'w1' .*cut.wav\): truncated file: the header says 16000 "
                                             r"frames, the file holds 9978; fix: replace the file"):
            read_segment(audio_item(cut, start, end))
    flac = tmp_path / "w.flac"
    soundfile.write(flac, 0.1 * np.random.default_rng(0).standard_normal(48000), 16000)
    (tmp_path / "cut.flac").write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(MediaError, match=r"unreadable audio: .*lost sync"):  # FLAC's header keeps the full length
        read_segment(audio_item(tmp_path / "cut.flac"))


def riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A RIFF WAVE file made of the given (id, body) chunks, padded as the format says."""
    body = b"".join(kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1) for kind, data in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_truncation_is_judged_by_the_data_chunk_whatever_the_layout(tmp_path):
    fmt = struct.pack("<HHIIHH", 3, 2, 16000, 16000 * 8, 8, 32)  # float, stereo: 8 bytes per frame
    frames = np.zeros((1000, 2), np.float32).tobytes()
    listed = riff([(b"fmt ", fmt), (b"LIST", b"INFOx"), (b"data", frames)])  # an odd-sized chunk before data
    (tmp_path / "whole.wav").write_bytes(listed)
    assert len(read_segment(audio_item(tmp_path / "whole.wav"))) == 1000
    (tmp_path / "tail.wav").write_bytes(riff([(b"fmt ", fmt), (b"data", frames), (b"LIST", b"INFO")]))
    assert len(read_segment(audio_item(tmp_path / "tail.wav"))) == 1000  # a chunk after the audio is fine
    (tmp_path / "cut.wav").write_bytes(listed[:-804])
    with pytest.raises(MediaError, match="the header says 1000 frames, the file holds 899"):
        read_segment(audio_item(tmp_path / "cut.wav"))
    streamed = bytearray(listed)  # a writer on a pipe leaves 0xFFFFFFFF: a placeholder, not a promise
    streamed[listed.index(b"data") + 4:listed.index(b"data") + 8] = b"\xff" * 4
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    assert len(read_segment(audio_item(tmp_path / "streamed.wav"))) == 1000


def test_non_audio_bytes_named_wav(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "picture.wav", format="PNG")
    with pytest.raises(MediaError, match=r"picture.wav\): unreadable audio: .*Format not recognised"):
        read_segment(audio_item(tmp_path / "picture.wav"))


def test_a_header_sample_rate_of_zero_is_unreadable_not_a_crash(tmp_path):
    ramp_wav(tmp_path / "u.wav", subtype="PCM_16")
    data = bytearray((tmp_path / "u.wav").read_bytes())
    data[24:28] = struct.pack("<I", 0)  # the fmt chunk's sample rate
    (tmp_path / "u.wav").write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"item 'w1' .*u.wav\): unreadable audio: "):
        read_segment(audio_item(tmp_path / "u.wav"))


def test_8_khz_is_upsampled_not_refused(tmp_path):
    ramp_wav(tmp_path / "lo.wav", rate=8000, seconds=0.5)
    assert abs(len(read_segment(audio_item(tmp_path / "lo.wav"))) - 8000) <= 1


def test_segment_starting_past_the_end(tmp_path):
    ramp_wav(tmp_path / "u.wav")
    for start, end in ((1.5, None), (1.0, None)):
        with pytest.raises(MediaError, match=r"segment starts at 1.[05] s, at or past the end of the file's 1.000 s"):
            read_segment(audio_item(tmp_path / "u.wav", start, end))


def test_empty_segment_and_empty_file(tmp_path):
    path = tmp_path / "u.wav"
    ramp_wav(path)
    with pytest.raises(MediaError, match=r"empty segment \(frames 8000..8000 of 16000\)"):
        read_segment(audio_item(path, 0.5, 0.50001))
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(MediaError, match="empty segment"):
        read_segment(audio_item(empty))
    with pytest.raises(MediaError, match="beyond the file's 1.000 s"):
        read_segment(audio_item(path, 0.5, 1.2))


def test_segment_shorter_than_the_encoder_frame(tmp_path):
    path = tmp_path / "u.wav"
    ramp_wav(path)
    assert len(read_segment(audio_item(path, 0.0, 0.025), min_samples=400)) == 400  # exactly one frame
    with pytest.raises(MediaError) as info:
        read_segment(audio_item(path, 0.0, 0.015), min_samples=400)
    assert "segment too short: 240 samples at 16000 Hz (15.0 ms), the encoder needs at least 400 (25.0 ms)" \
        in str(info.value)
    assert "widen start/end" in str(info.value)


def test_nan_samples(tmp_path):
    path = tmp_path / "nan.wav"
    soundfile.write(path, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match="1600 of 1600 samples are NaN or infinite"):
        read_segment(audio_item(path))
    some = np.zeros(1600, np.float32)
    some[10] = np.inf
    soundfile.write(path, some, 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match="1 of 1600 samples"):
        read_segment(audio_item(path))


# ---------------------------------------------------------------------------------------------- images


def test_rgb_image_round_trips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(image_item(tmp_path / "a.png"))
    assert image.mode == "RGB" and image.size == (20, 12)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_transparency_becomes_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)     # opaque red object
    rgba[1, 1] = (0, 0, 255, 128)     # half-transparent blue edge
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(read_image(image_item(tmp_path / "rgba.png")))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[3, 3]) == (255, 255, 255)  # fully transparent (black RGB values) -> white, not black
    assert tuple(out[1, 1]) == pytest.approx((127, 127, 255), abs=1)

    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.putpixel((2, 2), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    out = np.asarray(read_image(image_item(tmp_path / "p.png")))
    assert tuple(out[2, 2]) == (0, 200, 0) and tuple(out[0, 0]) == (255, 255, 255)


def test_grey_and_16_bit_grey(tmp_path):
    Image.fromarray(np.full((3, 3), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert tuple(np.asarray(read_image(image_item(tmp_path / "g.png")))[0, 0]) == (77, 77, 77)
    Image.fromarray(np.full((3, 3), 40000, np.uint16)).save(tmp_path / "g16.png")
    assert tuple(np.asarray(read_image(image_item(tmp_path / "g16.png")))[0, 0]) == (156, 156, 156)


def test_image_errors(tmp_path):
    with pytest.raises(MediaError, match=r"item 'img-9' .*: file not found; fix: restore the file"):
        read_image(image_item(tmp_path / "gone.png", "img-9"))
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty file \(0 bytes\)"):
        read_image(image_item(tmp_path / "zero.png"))
    (tmp_path / "text.png").write_bytes(b"this is not a picture")
    with pytest.raises(MediaError, match="not an image Pillow can read"):
        read_image(image_item(tmp_path / "text.png"))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="corrupt or truncated image"):
        read_image(image_item(tmp_path / "t.png"))
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"t.jpg\): corrupt or truncated image: image file is truncated"):
        read_image(image_item(tmp_path / "t.jpg"))


def test_zero_size_png(tmp_path):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    (tmp_path / "z.png").write_bytes(png)
    with pytest.raises(MediaError, match=r"item 'i1' .*z.png\): not an image Pillow can read \(corrupt, zero-size"):
        read_image(image_item(tmp_path / "z.png"))  # Pillow refuses a 0-wide image when it opens it
