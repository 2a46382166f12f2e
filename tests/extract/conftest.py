"""Fixtures shared by the extraction tests."""
from pathlib import Path

import pytest

from tests.extract.tiny_models import save_tiny_resnet, save_tiny_wavlm


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """Tiny random-weight WavLM and ResNet folders, saved once, loaded through the users' path."""
    root = tmp_path_factory.mktemp("models")
    save_tiny_wavlm(root / "tiny-wavlm")
    save_tiny_resnet(root / "tiny-resnet")
    return root
