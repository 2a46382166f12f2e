"""Which encoder layer a run trains on: `--audio-layer N | weighted | A..B`, checked against its stores.

A store of one layer needs no choice (`audio_layer` None); a store with a layer axis
(`extract-features --layers`) needs one: a hidden state the store holds (only that layer is loaded into
memory, so the run is the very run a store of that layer alone would give), or `weighted`, a learned
softmax-weighted sum of every stored layer (`train.model.LayerWeights`, the SUPERB / s3prl convention).
"""
from __future__ import annotations

import re
from typing import Union

WEIGHTED = "weighted"
AudioLayer = Union[int, str, None]  # a hidden-state index, WEIGHTED, or None (the store's only layer)


class AudioLayerError(ValueError):
    """An `--audio-layer` value that cannot be parsed, or that the run's stores cannot serve."""


def parse_audio_layers(values: list[str]) -> list[AudioLayer]:
    """`--audio-layer` values → the layers to sweep, in order, each once: `7`, `weighted`, ranges `0..12`
    (or `0-12`), lists `0 3 6`; [None] when none is given (the store's only layer)."""
    out: list[AudioLayer] = []
    for value in values:
        text = str(value).strip().lower()
        match = re.fullmatch(r"(\d+)(?:(?:\.\.|-)(\d+))?", text)
        if text in (WEIGHTED, "w"):
            chosen: list[AudioLayer] = [WEIGHTED]
        elif match and (match[2] is None or int(match[2]) >= int(match[1])):
            chosen = list(range(int(match[1]), int(match[2] if match[2] is not None else match[1]) + 1))
        else:
            raise AudioLayerError(f"--audio-layer {value!r}: give a layer number (7), a range (0..12), several "
                                  f"(0 3 6) or {WEIGHTED!r} (a learned weighted sum of the stored layers)")
        out += [layer for layer in chosen if layer not in out]
    return out or [None]


def check_audio_layer(audio_layer: AudioLayer, store, name: str) -> None:
    """Refuse a layer choice the store `name` cannot serve, saying what it holds and what to pass."""
    layers = store.layers
    if audio_layer is None:
        if layers is not None:
            raise AudioLayerError(f"{name} holds layers {describe_layers(layers)} (a layer axis): choose one with "
                                  f"--audio-layer N, sweep them (--audio-layer {layers[0]}..{layers[-1]}), or learn "
                                  f"a weighted sum (--audio-layer {WEIGHTED})")
        return
    if audio_layer == WEIGHTED:
        if layers is None:
            raise AudioLayerError(f"--audio-layer {WEIGHTED} learns a sum over layers, but {name} holds one layer; "
                                  "extract several (extract-features --layers all)")
        return
    try:
        store.layer_position(int(audio_layer))
    except ValueError as error:
        raise AudioLayerError(f"--audio-layer {audio_layer}: {error}") from None


def load_layer(audio_layer: AudioLayer) -> int | None:
    """The `layer=` a store is loaded or read with for a run of `audio_layer`: the hidden state of an int,
    else None (every stored layer: the weighted sum reads them all; a store of one layer has only it)."""
    return audio_layer if isinstance(audio_layer, int) else None


def layer_suffix(audio_layer: AudioLayer) -> str:
    """The run-name part: `-L7`, `-Lw` (weighted), or `` for a store of one layer."""
    if audio_layer is None:
        return ""
    return "-Lw" if audio_layer == WEIGHTED else f"-L{int(audio_layer)}"


def describe_layers(layers) -> str:
    """`0..12` for a contiguous run, else `0, 3, 6`."""
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))
