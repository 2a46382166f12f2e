"""Episodes: negatives of other familiar concepts only, train items only, independent draws, fixed seeds."""
import numpy as np
import pytest

from train.sampler import EpisodeSampler, SamplingError, concept_codes

FAMILIAR = [f"f{k}" for k in range(13)]


def pool(n_per: int, rng: np.random.Generator):
    """Items of 13 familiar + 3 novel concepts in shuffled order, a third of them outside the train split."""
    concept = np.repeat(FAMILIAR + ["n0", "n1", "n2"], n_per)
    rng.shuffle(concept)
    split = rng.choice(["train", "train", "valid", "test"], len(concept))
    kind = np.where(np.char.startswith(concept.astype(str), "f"), "familiar", "novel")
    return concept, kind, split


def make_sampler(mode="per-anchor", seed=0):
    rng = np.random.default_rng(seed)
    a_concept, a_kind, a_split = pool(20, rng)
    i_concept, i_kind, i_split = pool(15, rng)
    keep_a = (a_kind == "familiar") & (a_split == "train")
    keep_i = (i_kind == "familiar") & (i_split == "train")
    sampler = EpisodeSampler(concept_codes(a_concept, keep_a, FAMILIAR), concept_codes(i_concept, keep_i, FAMILIAR),
                             FAMILIAR, mode=mode)
    return sampler, (a_concept, keep_a), (i_concept, keep_i)


def test_per_anchor_episodes_follow_the_paper():
    sampler, (a_concept, keep_a), (i_concept, keep_i) = make_sampler()
    rng = np.random.default_rng(1)
    order = sampler.epoch_order(rng)
    assert sorted(order.tolist()) == np.flatnonzero(keep_a).tolist()  # every train familiar audio once
    for start in range(0, len(order), 60):
        anchors = order[start:start + 60]
        ep = sampler.draw(anchors, rng)
        assert ep.audio.shape == ep.image.shape == (len(anchors), 12)
        assert (ep.audio[:, 0] == anchors).all()
        own = a_concept[anchors]
        assert (i_concept[ep.image[:, 0]] == own).all()  # the positive image is of the anchor's concept
        assert (i_concept[ep.image[:, 1:]] != own[:, None]).all()  # never a negative of the anchor's concept
        assert (a_concept[ep.audio[:, 1:]] != own[:, None]).all()
        assert keep_a[ep.audio].all() and keep_i[ep.image].all()  # train split, familiar concepts only


def test_negative_concepts_are_uniform_over_the_other_twelve():
    sampler, (a_concept, _), (i_concept, _) = make_sampler()
    rng = np.random.default_rng(2)
    anchors = np.repeat(sampler.anchors[:1], 20000)
    ep = sampler.draw(anchors, rng)
    counts = np.unique(i_concept[ep.image[:, 1:]], return_counts=True)[1]
    assert len(counts) == 12
    expected = 20000 * 11 / 12
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)
    # image and audio negatives are drawn independently
    assert (i_concept[ep.image[:, 1:]] != a_concept[ep.audio[:, 1:]]).mean() > 0.85


def test_same_seed_same_episodes_and_equal_steps_repeats():
    sampler = make_sampler()[0]
    a = sampler.draw(sampler.epoch_order(np.random.default_rng(5)), np.random.default_rng(6))
    b = sampler.draw(sampler.epoch_order(np.random.default_rng(5)), np.random.default_rng(6))
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.image, b.image)
    doubled = sampler.epoch_order(np.random.default_rng(0), repeats=2)
    assert np.array_equal(np.sort(doubled), np.sort(np.tile(sampler.anchors, 2)))


def test_shared_negatives_mask_the_anchor_concept():
    sampler, (a_concept, keep_a), (i_concept, keep_i) = make_sampler("shared")
    anchors = sampler.anchors[:60]
    ep = sampler.draw(anchors, np.random.default_rng(0))
    assert (ep.image[:, 1:] == ep.image[:1, 1:]).all()  # one set of negatives for the whole batch
    same = i_concept[ep.image[:, 1:]] == a_concept[anchors][:, None]
    assert np.array_equal(~ep.image_valid[:, 1:], same)
    assert ep.image_valid[:, 0].all() and keep_i[ep.image].all() and keep_a[ep.audio].all()


def test_missing_concept_is_a_clear_error():
    codes = concept_codes(np.array(["f0", "f1"]), np.array([True, True]), ["f0", "f1", "f2"])
    with pytest.raises(SamplingError, match="f2"):
        EpisodeSampler(codes, codes, ["f0", "f1", "f2"])
