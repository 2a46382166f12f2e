"""Is a WAV file whole? Its header's promised audio length against the bytes the file really holds.

libsndfile sizes a truncated WAV by the bytes that are there and reads it without a word of warning, so a
file cut short by a failed copy or a full disk would be extracted from its first half. The ``data`` chunk's
size field in the RIFF header still says how long the audio was meant to be: comparing the two is the only
way to notice. FLAC and Ogg need no such check (a cut FLAC fails to decode; see ``extract.audio``).
"""
from __future__ import annotations

import dataclasses
import os
import struct

# Writers that cannot seek back (a pipe) leave a placeholder instead of the size: not a promise.
_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000})
_FRAME_FORMATS = frozenset({1, 3, 0xFFFE})  # PCM, IEEE float, extensible: bytes = frames × block_align
_MAX_CHUNKS = 64  # a word's WAV has a handful (fmt, fact, LIST, data); more means a garbled header


@dataclasses.dataclass(frozen=True)
class Truncation:
    """How much audio the header promises and how much the file holds, in frames (or bytes)."""

    promised: int
    present: int
    unit: str  # "frames" for PCM/float WAVs, "bytes" for compressed ones

    def __str__(self) -> str:
        return (f"truncated file: the header says {self.promised} {self.unit}, "
                f"the file holds {self.present}")


def wav_truncation(path: str | os.PathLike) -> Truncation | None:
    """The truncation of a RIFF/RIFX WAV file, or None when it is whole, not a WAV, or not checkable.

    Only the header is read (a few hundred bytes). Anything this parser does not understand is left to
    libsndfile, which reports corrupt files itself.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            block_align, fmt_tag = 0, 0
            for _ in range(_MAX_CHUNKS):
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                kind, length = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
                if kind == b"data":
                    if length in _UNKNOWN_SIZES:
                        return None
                    present = size - f.tell()
                    if present >= length:
                        return None
                    if fmt_tag in _FRAME_FORMATS and block_align > 0:
                        return Truncation(length // block_align, present // block_align, "frames")
                    return Truncation(length, present, "bytes")
                if kind == b"fmt " and length >= 16:
                    body = f.read(length + (length & 1))
                    fmt_tag, block_align = struct.unpack(endian + "H", body[:2])[0], \
                        struct.unpack(endian + "H", body[12:14])[0]
                    continue
                f.seek(length + (length & 1), os.SEEK_CUR)  # chunks are padded to an even size
    except OSError:
        return None  # missing or unreadable: the audio reader says so with the item named
    return None
