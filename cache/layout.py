"""Workspace paths and store file names: the one place that knows where things live under $VGSME_HOME."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

FORMAT_SUFFIX = {"hdf5": ".h5", "zarr": ".zarr"}
SUFFIX_FORMAT = {".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr"}

_NAME = re.compile(
    r"^(?P<prefix>audio-[^.]+|image)\.(?P<encoder>.+?)(?:\.L(?P<layer>\d+(?:-\d+|(?:\+\d+)+)?))?"
    r"(?:\.shard-(?P<k>\d+)-of-(?P<n>\d+))?(?P<suffix>\.h5|\.hdf5|\.zarr)$"
)


class StoreNotFound(ValueError):
    """No store (or no single unambiguous store) matches a request; the message says what exists and what to run."""


def vgsme_home() -> Path:
    """The workspace root: $VGSME_HOME, else ./workspace, resolved to an absolute path."""
    return Path(os.environ.get("VGSME_HOME") or "workspace").expanduser().resolve()


def corpus_dir(name: str, home: Path | None = None) -> Path:
    return (home or vgsme_home()) / "corpora" / name


def cache_dir(corpus: str, home: Path | None = None) -> Path:
    return (home or vgsme_home()) / "cache" / corpus


def runs_dir(study: str, home: Path | None = None) -> Path:
    return (home or vgsme_home()) / "runs" / study


def reports_dir(study: str, home: Path | None = None) -> Path:
    return (home or vgsme_home()) / "reports" / study


def encoder_slug(name: str) -> str:
    """A file-name-safe form of an encoder id: `microsoft/wavlm-base-plus` -> `microsoft--wavlm-base-plus`."""
    slug = name.strip().rstrip("/").replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", slug)
    if not slug:
        raise ValueError(f"encoder name {name!r} gives an empty file name")
    return slug


def layers_tag(layers: Sequence[int]) -> str:
    """The name part of a layer axis: `0-12` for a contiguous run of layers, else `0+3+6`. Never a bare
    number, so a store of several layers cannot collide with the store of one layer (`.L7`)."""
    layers = [int(v) for v in layers]
    if len(layers) >= 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    if len(layers) < 2:
        raise ValueError(f"a layer axis names at least two layers, not {layers}")
    return "+".join(map(str, layers))


def parse_layers_tag(tag: str) -> tuple[int, ...]:
    """Inverse of `layers_tag`."""
    if "-" in tag:
        low, high = (int(v) for v in tag.split("-"))
        return tuple(range(low, high + 1))
    return tuple(int(v) for v in tag.split("+"))


def store_name(modality: str, encoder: str, lang: str | None = None, layer: int | None = None,
               fmt: str = "hdf5", shard: tuple[int, int] | None = None,
               layers: Sequence[int] | None = None) -> str:
    """The file name of a store, e.g. `audio-en.whisper-base.h5`, `image.efficientnet-lite0.L3.shard-1-of-4.zarr`,
    `audio-en.microsoft--wavlm-base-plus.L0-12.h5` (a layer axis: `layers`)."""
    if modality == "audio":
        if not lang:
            raise ValueError("an audio store name needs a language")
        prefix = f"audio-{lang}"
    elif modality == "image":
        prefix = "image"
    else:
        raise ValueError(f"modality must be 'audio' or 'image', not {modality!r}")
    if fmt not in FORMAT_SUFFIX:
        raise ValueError(f"format must be one of {sorted(FORMAT_SUFFIX)}, not {fmt!r}")
    name = f"{prefix}.{encoder_slug(encoder)}"
    if layer is not None and layers is not None:
        raise ValueError("a store name takes layer or layers, not both")
    if layer is not None:
        name += f".L{int(layer)}"
    if layers is not None:
        name += f".L{layers_tag(layers)}"
    if shard is not None:
        k, n = shard
        name += f".shard-{int(k)}-of-{int(n)}"
    return name + FORMAT_SUFFIX[fmt]


def store_path(cache_dir: Path, modality: str, encoder: str, lang: str | None = None, layer: int | None = None,
               fmt: str = "hdf5", shard: tuple[int, int] | None = None,
               layers: Sequence[int] | None = None) -> Path:
    return Path(cache_dir) / store_name(modality, encoder, lang, layer, fmt, shard, layers)


@dataclass(frozen=True)
class StoreName:
    """The parts of a store file name."""

    modality: str
    lang: str | None
    encoder: str  # the slug
    layer: int | None
    shard: tuple[int, int] | None
    fmt: str
    layers: tuple[int, ...] | None = None  # a layer axis (then layer is None)

    @property
    def set_key(self) -> tuple:
        """Names with the same key are shards of one store."""
        return (self.modality, self.lang, self.encoder, self.layer, self.fmt, self.layers)


def parse_store_name(name: str) -> StoreName | None:
    """The parts of a store file name, or None for a file that is not a store."""
    m = _NAME.match(name)
    if not m:
        return None
    prefix = m["prefix"]
    modality, lang = ("image", None) if prefix == "image" else ("audio", prefix[len("audio-"):])
    shard = (int(m["k"]), int(m["n"])) if m["k"] else None
    tag = m["layer"]
    layer = int(tag) if tag and tag.isdigit() else None
    layers = parse_layers_tag(tag) if tag and not tag.isdigit() else None
    return StoreName(modality, lang, m["encoder"], layer, shard, SUFFIX_FORMAT[m["suffix"]], layers)


def _describe(names: list[StoreName]) -> str:
    keys = sorted({n.set_key for n in names}, key=str)
    return ", ".join(f"{enc}{'' if layer is None else f' layer {layer}'}"
                     f"{'' if layers is None else f' layers {layers_tag(layers)}'} ({fmt})"
                     for _, _, enc, layer, fmt, layers in keys)


def find_stores(cache_dir: Path, modality: str, lang: str | None = None, encoder: str | None = None,
                layer: int | None = None, fmt: str | None = None, layered: bool | None = None) -> list[Path]:
    """The paths of the one store (or the full shard set, in shard order) that matches the request.

    `layered`: True keeps only stores with a layer axis (`extract-features --layers`), False only stores
    of one layer, None either. Raises `StoreNotFound` naming what the folder holds and the
    `extract-features` command to run when nothing matches, when several encoders/layers/formats match
    (asking for the option that picks one), or when a shard set is incomplete.
    """
    cache_dir = Path(cache_dir)
    corpus = cache_dir.name
    what = f"audio ({lang})" if modality == "audio" else "image"
    run = (f"extract-features --corpus {corpus} " + (f"--lang {lang}" if modality == "audio" else "--modality image")
           + (f" --encoder {encoder}" if encoder else ""))
    entries = sorted(cache_dir.iterdir()) if cache_dir.is_dir() else []
    parsed = [(p, parse_store_name(p.name)) for p in entries]
    stores = [(p, n) for p, n in parsed if n is not None]
    wanted = [(p, n) for p, n in stores if n.modality == modality and (modality == "image" or n.lang == lang)]
    if encoder is not None:
        wanted = [(p, n) for p, n in wanted if n.encoder == encoder_slug(encoder)]
    if layer is not None:
        wanted = [(p, n) for p, n in wanted if n.layer == layer]
    if fmt is not None:
        wanted = [(p, n) for p, n in wanted if n.fmt == fmt]
    if layered is not None:
        wanted = [(p, n) for p, n in wanted if (n.layers is not None) == layered]
    if not wanted:
        unfinished = [p.name for p in entries if p.name.endswith(".partial")
                      and (n := parse_store_name(p.name[:-len(".partial")])) is not None
                      and n.modality == modality and (modality == "image" or n.lang == lang)]
        if unfinished:
            raise StoreNotFound(f"the {what} store in {cache_dir} is not finished (journal {', '.join(unfinished)}): "
                                f"its extraction was interrupted or is running; rerun `{run}` to resume it")
        held = ", ".join(p.name for p, _ in stores) or "no stores"
        kind = {True: " with a layer axis", False: " of one layer", None: ""}[layered]
        raise StoreNotFound(f"no {what} store{kind}{f' for encoder {encoder}' if encoder else ''} in {cache_dir} "
                            f"(it holds: {held}); run `{run}{' --layers all' if layered else ''}` first")
    keys = {n.set_key for _, n in wanted}
    if len(keys) > 1:
        raise StoreNotFound(f"several {what} stores in {cache_dir}: {_describe([n for _, n in wanted])}; "
                            "choose one with the encoder (and layer / format) option")
    unsharded = [p for p, n in wanted if n.shard is None]
    sharded = sorted(((n.shard, p) for p, n in wanted if n.shard is not None))
    if unsharded and sharded:
        raise StoreNotFound(f"{cache_dir} holds both a whole {what} store and shards of it: "
                            f"{', '.join(p.name for p, _ in wanted)}; remove one of them")
    if unsharded:
        return unsharded
    totals = {shard[1] for shard, _ in sharded}
    if len(totals) > 1:
        raise StoreNotFound(f"{what} shards in {cache_dir} disagree on the shard count: "
                            f"{', '.join(p.name for _, p in sharded)}")
    total = totals.pop()
    have = {shard[0] for shard, _ in sharded}
    missing = [k for k in range(1, total + 1) if k not in have]
    if missing:
        raise StoreNotFound(f"{what} shard set in {cache_dir} is missing shard(s) "
                            f"{', '.join(f'{k}-of-{total}' for k in missing)}; run `{run} --shard K/{total}` for each")
    return [p for _, p in sharded]
