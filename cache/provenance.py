"""Where a store's features came from, and whether a store can be reused for a request.

A store is reused only when every field that changes the bytes of its features agrees with the request;
`Provenance.mismatches` names the ones that differ so that the refusal message can say exactly why.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Mapping

from .vocab import MODALITIES

# 2: per-item CRC-32C `checksums` and the `format` attribute (cache/integrity.py). Stores of another
# format are refused with "re-extract it".
FORMAT_VERSION = 2

# Fields that record when and by what the store was written: they never decide reuse.
_INFORMATIONAL = ("created", "package_version")


def package_version() -> str:
    """The installed vgsme version, or "0+unknown" when running from an uninstalled checkout."""
    try:
        return metadata.version("vgsme")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Everything that decides the bytes of a store's features, plus when and by what it was written.

    `preprocessing` holds simple JSON values (sample_rate, resampler, image_size, normalisation, positions,
    frame_rate, ...); `precision` is what the encoder computed in (features made in bf16 differ from fp32
    ones, so they are never mixed); `shard` is (K, N) for the K-th of N shards (1-based) or None for a whole store.
    """

    encoder: str
    encoder_fingerprint: str
    layer: int | None
    dim: int
    modality: str
    lang: str | None
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    corpus: str = ""
    corpus_hash: str = ""
    package_version: str = field(default_factory=package_version)
    created: str = field(default_factory=_now)
    shard: tuple[int, int] | None = None
    format_version: int = FORMAT_VERSION
    precision: str = ""  # the encoder's resolved compute precision (bf16|fp16|fp32); "" = not recorded

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"provenance modality must be one of {MODALITIES}, not {self.modality!r}")
        if self.modality == "audio" and not self.lang:
            raise ValueError("an audio store's provenance needs its language (lang)")
        if self.shard is not None:
            k, n = (int(v) for v in self.shard)
            if not 1 <= k <= n:
                raise ValueError(f"shard must be (K, N) with 1 <= K <= N, not {self.shard!r}")
            object.__setattr__(self, "shard", (k, n))
        object.__setattr__(self, "preprocessing", dict(self.preprocessing))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the shard as a list)."""
        d = dataclasses.asdict(self)
        d["shard"] = list(self.shard) if self.shard is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Provenance":
        """Inverse of `to_dict`; unknown keys are an error so that a newer store is not misread."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown provenance fields {sorted(unknown)}: the store was written by a newer vgsme")
        kw = dict(d)
        if kw.get("shard") is not None:
            kw["shard"] = tuple(kw["shard"])
        return cls(**kw)

    def identity(self) -> dict[str, Any]:
        """`to_dict()` without the fields that only record when and by what the store was written: what a
        store's content fingerprint covers, so a rebuild that gives the same bytes keeps its fingerprint."""
        return {k: v for k, v in self.to_dict().items() if k not in _INFORMATIONAL}

    def replace(self, **changes: Any) -> "Provenance":
        return dataclasses.replace(self, **changes)

    def mismatches(self, other: "Provenance", ignore: tuple[str, ...] = ()) -> list[str]:
        """One line per field that differs between `self` (stored) and `other` (requested).

        `created` and `package_version` never count; preprocessing is compared key by key.
        """
        out = []
        for f in dataclasses.fields(self):
            name = f.name
            if name in _INFORMATIONAL or name in ignore:
                continue
            a, b = getattr(self, name), getattr(other, name)
            if name == "preprocessing":
                for key in sorted(set(a) | set(b)):
                    if a.get(key) != b.get(key):
                        out.append(f"preprocessing.{key}: stored {a.get(key)!r}, requested {b.get(key)!r}")
            elif a != b:
                out.append(f"{name}: stored {a!r}, requested {b!r}")
        return out
