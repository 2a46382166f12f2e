"""Episode sampling: test split only, same source, 50 per concept, fixed and reproducible draws."""
import numpy as np
import pandas as pd
import pytest

from analyse.episodes import EpisodeError, draw_episodes, get_episodes

FAMILIAR = [f"fam{i:02d}" for i in range(13)]
NOVEL = [f"nov{i:02d}" for i in range(19)]


def items(lang: str = "en"):
    """Audio and image tables with train/valid/test items over two sources, plus a lone third source."""
    audio, images = [], []
    for kind, concepts in (("familiar", FAMILIAR), ("novel", NOVEL)):
        for c in concepts:
            for split, n in (("train", 5), ("valid", 2), ("test", 4)):
                audio += [dict(id=f"{lang}-{c}-{split}-{k}", concept=c, kind=kind, source="tts", split=split, lang=lang) for k in range(n)]
            for split in ("train", "valid", "test"):
                for source in ("s1", "s2"):
                    images += [dict(id=f"img-{c}-{split}-{source}-{k}", concept=c, kind=kind, source=source, split=split) for k in range(2)]
    # a novel image whose source has no familiar test image: it can never be a positive
    images.append(dict(id="img-nov00-test-lonely", concept="nov00", kind="novel", source="s3", split="test"))
    return pd.DataFrame(audio), pd.DataFrame(images)


@pytest.mark.parametrize("test,kind", [("familiar", "familiar"), ("me", "novel")])
def test_episode_rules(test, kind):
    audio, images = items()
    eps = draw_episodes(audio, images, "en", test, per_concept=50, seed=3)
    concepts = FAMILIAR if kind == "familiar" else NOVEL
    assert eps["concept"].value_counts().to_dict() == {c: 50 for c in concepts}
    assert list(eps["episode"]) == list(range(50 * len(concepts)))
    a = audio.set_index("id")
    im = images.set_index("id")
    assert (a.loc[eps["query_id"], "concept"].to_numpy() == eps["concept"].to_numpy()).all()
    assert (im.loc[eps["pos_id"], "concept"].to_numpy() == eps["concept"].to_numpy()).all()
    for col, table in (("query_id", a), ("pos_id", im), ("neg_id", im)):
        assert set(table.loc[eps[col], "split"]) == {"test"}
    neg = im.loc[eps["neg_id"]]
    assert set(neg["kind"]) == {"familiar"}
    assert (neg["concept"].to_numpy() != eps["concept"].to_numpy()).all()
    assert (neg["source"].to_numpy() == im.loc[eps["pos_id"], "source"].to_numpy()).all()
    assert "img-nov00-test-lonely" not in set(eps["pos_id"])
    # the draws actually vary: several queries, positives and negatives per concept
    assert eps.groupby("concept")["neg_id"].nunique().min() > 5
    assert eps.groupby("concept")["query_id"].nunique().min() == 4


def test_draw_is_reproducible_and_order_free():
    audio, images = items()
    a = draw_episodes(audio, images, "en", "me", seed=1)
    b = draw_episodes(audio.sample(frac=1, random_state=0), images.sample(frac=1, random_state=1), "en", "me", seed=1)
    pd.testing.assert_frame_equal(a, b)
    c = draw_episodes(audio, images, "en", "me", seed=2)
    assert not a.equals(c)


def test_negatives_are_uniform_over_same_source_items():
    audio, images = items()
    eps = draw_episodes(audio, images, "en", "me", per_concept=2000, seed=0)
    counts = eps["neg_id"].value_counts()
    # 13 familiar concepts × 2 images per source: 26 candidates, each drawn ~1/26 of the time
    assert len(counts) == 13 * 2 * 2
    share = counts / counts.sum()
    assert np.allclose(share, 1 / 52, atol=0.004)


def test_missing_test_audio_is_an_error_naming_the_concept():
    audio, images = items()
    audio = audio[~((audio["concept"] == "fam03") & (audio["split"] == "test"))]
    with pytest.raises(EpisodeError, match="fam03: no test audio"):
        draw_episodes(audio, images, "en", "familiar")


def test_saved_episodes_are_reused_and_checked(tmp_path):
    audio, images = items()
    first = get_episodes(tmp_path, audio, images, "en", "me", corpus="c", audio_hash="a1", image_hash="i1")
    assert (tmp_path / "en.me.csv").exists() and (tmp_path / "en.me.json").exists()
    # reused even if the items changed: the file, not a redraw, is the reference
    again = get_episodes(tmp_path, audio.iloc[::-1], images, "en", "me", corpus="c", audio_hash="a1", image_hash="i1")
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(EpisodeError, match="image_hash"):
        get_episodes(tmp_path, audio, images, "en", "me", corpus="c", audio_hash="a1", image_hash="i2")
    with pytest.raises(EpisodeError, match="audio_hash"):
        get_episodes(tmp_path, audio, images, "en", "me", corpus="c", audio_hash="a2", image_hash="i1")
    redrawn = get_episodes(tmp_path, audio, images, "en", "me", corpus="c", audio_hash="a2", image_hash="i1", seed=5, redraw=True)
    assert not redrawn.equals(first)


def test_episodes_are_keyed_by_the_exclusion(tmp_path):
    import json

    audio, images = items()
    kw = dict(corpus="c", audio_hash="a1", image_hash="i1")
    full = get_episodes(tmp_path, audio, images, "en", "me", **kw)
    sidecar = tmp_path / "en.me.json"
    assert json.loads(sidecar.read_text())["excluded"] == []
    # a sidecar written before the option existed reads as "nothing excluded"
    sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "excluded"}))
    pd.testing.assert_frame_equal(get_episodes(tmp_path, audio, images, "en", "me", **kw), full)
    with pytest.raises(EpisodeError, match=r"excluded: saved \(\), wanted \('nov05',\).*--exclude-concepts.*--redraw"):
        get_episodes(tmp_path, audio, images, "en", "me", excluded=("nov05",), **kw)
    redrawn = get_episodes(tmp_path, audio, images, "en", "me", excluded=("nov05",), redraw=True, **kw)
    assert len(redrawn) == len(full) - 50 and "nov05" not in set(redrawn["concept"])
    assert json.loads(sidecar.read_text())["excluded"] == ["nov05"]
    pd.testing.assert_frame_equal(get_episodes(tmp_path, audio, images, "en", "me", excluded=("nov05",), **kw), redrawn)
