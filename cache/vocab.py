"""The corpus vocabularies every stage shares: concept kinds, splits and modalities."""
from __future__ import annotations

KINDS = ("familiar", "novel")
SPLITS = ("train", "valid", "test")
MODALITIES = ("audio", "image")
