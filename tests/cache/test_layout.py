"""Workspace paths, store names, and finding the store for a request."""
from pathlib import Path

import pytest

from cache import layout
from cache.layout import StoreNotFound, cache_dir, encoder_slug, find_stores, parse_store_name, store_path
from cache.provenance import Provenance


def test_home_and_dirs(vgsme_home):
    assert layout.vgsme_home() == Path(vgsme_home).resolve()
    assert cache_dir("demo") == vgsme_home / "cache" / "demo"


def test_names_follow_the_architecture(tmp_path):
    assert encoder_slug("microsoft/wavlm-base-plus") == "microsoft--wavlm-base-plus"
    assert store_path(tmp_path, "audio", "whisper-base", lang="en").name == "audio-en.whisper-base.h5"
    assert store_path(tmp_path, "image", "efficientnet-lite0").name == "image.efficientnet-lite0.h5"
    p = store_path(tmp_path, "audio", "microsoft/wavlm-base-plus", "fr", layer=6, fmt="zarr", shard=(2, 4))
    assert p.name == "audio-fr.microsoft--wavlm-base-plus.L6.shard-2-of-4.zarr"
    n = parse_store_name(p.name)
    assert (n.modality, n.lang, n.encoder, n.layer, n.shard, n.fmt) == ("audio", "fr", "microsoft--wavlm-base-plus",
                                                                         6, (2, 4), "zarr")
    assert parse_store_name("audio-en.whisper-base.h5.partial") is None
    with pytest.raises(ValueError):
        store_path(tmp_path, "audio", "x")


def test_find_stores(tmp_path):
    with pytest.raises(StoreNotFound, match="extract-features --corpus .* --lang en"):
        find_stores(tmp_path, "audio", "en")
    (tmp_path / "audio-en.whisper-base.h5").touch()
    (tmp_path / "image.efficientnet-lite0.shard-2-of-2.h5").touch()
    assert find_stores(tmp_path, "audio", "en") == [tmp_path / "audio-en.whisper-base.h5"]
    with pytest.raises(StoreNotFound, match="missing shard.*1-of-2"):
        find_stores(tmp_path, "image")
    (tmp_path / "image.efficientnet-lite0.shard-1-of-2.h5").touch()
    assert [p.name for p in find_stores(tmp_path, "image")] == ["image.efficientnet-lite0.shard-1-of-2.h5",
                                                               "image.efficientnet-lite0.shard-2-of-2.h5"]
    (tmp_path / "audio-en.microsoft--wavlm-base-plus.h5").touch()
    with pytest.raises(StoreNotFound, match="several .*encoder"):
        find_stores(tmp_path, "audio", "en")
    assert find_stores(tmp_path, "audio", "en", encoder="microsoft/wavlm-base-plus")[0].name.startswith("audio-en.mic")
    with pytest.raises(StoreNotFound, match="holds: .*whisper"):
        find_stores(tmp_path, "audio", "nl")
    (tmp_path / "audio-nl.whisper-base.h5.partial").mkdir()
    with pytest.raises(StoreNotFound, match="not finished.*resume"):
        find_stores(tmp_path, "audio", "nl")


def test_provenance_round_trip_and_mismatches():
    p = Provenance("whisper-base", "sha256:ab", None, 512, "audio", "en", {"sample_rate": 16000}, "demo", "h1",
                   shard=(1, 2))
    q = Provenance.from_dict(p.to_dict())
    assert q == p and q.shard == (1, 2)
    later = p.replace(created="2030-01-01", package_version="9", corpus_hash="h2",
                      preprocessing={"sample_rate": 16000, "resampler": "soxr"})
    assert {m.split(":")[0] for m in p.mismatches(later)} == {"corpus_hash", "preprocessing.resampler"}
    with pytest.raises(ValueError, match="newer vgsme"):
        Provenance.from_dict(p.to_dict() | {"future": 1})
    with pytest.raises(ValueError, match="language"):
        Provenance("w", "f", None, 4, "audio", None)
