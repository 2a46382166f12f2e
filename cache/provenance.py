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
# 3: format 2 plus a layer axis: audio features (frames, L, D), the L hidden states in `layers`. A store
# with one layer stays format 2, so that every store written before layer axes existed still opens and keeps
# its fingerprint; a vgsme that reads only format 2 refuses a format-3 store instead of misreading it.
LAYERED_FORMAT_VERSION = 3
READABLE_FORMATS = (FORMAT_VERSION, LAYERED_FORMAT_VERSION)

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
    `layers` (audio only) are the hidden-state indices of a store with a layer axis (0 = the input embeddings,
    strictly increasing; `layer` is then None); None for a store of one layer. `format_version` 0 means "the
    format this vgsme writes for this layout" (2, or 3 with `layers`).
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
    format_version: int = 0
    precision: str = ""  # the encoder's resolved compute precision (bf16|fp16|fp32); "" = not recorded
    layers: tuple[int, ...] | None = None

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
        if self.layers is not None:
            layers = tuple(int(v) for v in self.layers)
            if self.modality != "audio":
                raise ValueError("a store with a layer axis holds audio features only (image stores have one layer)")
            if self.layer is not None:
                raise ValueError(f"give layer ({self.layer}) or layers ({list(layers)}), not both")
            if not layers or any(v < 0 for v in layers) or any(b <= a for a, b in zip(layers, layers[1:])):
                raise ValueError(f"layers must be non-negative and strictly increasing, not {list(layers)}")
            object.__setattr__(self, "layers", layers)
        if not self.format_version:
            object.__setattr__(self, "format_version", self.layout_format)

    @property
    def layout_format(self) -> int:
        """The store format of this layout: 3 with a layer axis, else 2."""
        return LAYERED_FORMAT_VERSION if self.layers is not None else FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the shard and layers as lists). `layers` is left out when None, so a
        single-layer store's provenance, and with it its fingerprint, is what it was before layer axes."""
        d = dataclasses.asdict(self)
        d["shard"] = list(self.shard) if self.shard is not None else None
        if self.layers is None:
            del d["layers"]
        else:
            d["layers"] = list(self.layers)
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
        if kw.get("layers") is not None:
            kw["layers"] = tuple(kw["layers"])
        return cls(**kw)

    def identity(self) -> dict[str, Any]:
        """`to_dict()` without the fields that only record when and by what the store was written: what a
        store's content fingerprint covers, so a rebuild that gives the same bytes keeps its fingerprint."""
        return {k: v for k, v in self.to_dict().items() if k not in _INFORMATIONAL}

    def replace(self, **changes: Any) -> "Provenance":
        """A copy with `changes`; changing `layers` also moves the format to that layout's (unless given)."""
        if "layers" in changes and "format_version" not in changes:
            changes["format_version"] = 0
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
