"""Exposure regimes: language ratio, budget, L2 onset, amount of data and vocabulary size (issue 12)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cache import layout
from tests.synthetic import FAMILIAR
from train.cli import train_heads
from train.exposure import DEFAULTS, Exposure, ExposureError, sweep_exposures
from train.loop import LoadedStores, train_run
from train.model import TwoTower
from train.runs import RunFolder


def _metrics(path) -> list[dict]:
    return RunFolder.open(path).metrics
from train.schedule import make_schedule

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import tiny_config, write_tiny_cache  # noqa: E402

EN, FR = np.arange(0, 300), np.arange(1000, 1100)  # anchor pools of two languages


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"))


def test_defaults_record_and_name():
    assert Exposure().to_dict() == DEFAULTS and Exposure.from_dict(None) == Exposure() and Exposure().suffix() == ""
    assert Exposure.from_dict(json.loads(json.dumps(Exposure((75, 25), "matched").to_dict()))) == Exposure((75, 25),
                                                                                                            "matched")
    assert Exposure(ratio=(75, 25)).suffix() == "-r75"
    assert Exposure(budget="matched", l2_onset=5, data_fraction=0.5, vocab_size=8).suffix() == \
        "-matched-onset5-data50-vocab8"
    assert Exposure(data_fraction=0.125).suffix() == "-data12.5"
    assert json.dumps(Exposure(data_fraction=1).to_dict()) == json.dumps(DEFAULTS)


@pytest.mark.parametrize("fields, message", [
    ({"ratio": (70, 20)}, "summing to 100"), ({"ratio": (100, 0)}, "positive"), ({"budget": "half"}, "sum, matched"),
    ({"l2_onset": 0}, "1 or more"), ({"data_fraction": 0.0}, "(0, 1]"), ({"data_fraction": 1.5}, "(0, 1]"),
    ({"vocab_size": 1}, "2 or more")])
def test_malformed_values_are_refused(fields, message):
    with pytest.raises(ExposureError, match=message.replace("(", r"\(").replace("]", r"\]")):
        Exposure(**fields)


def test_meaningless_combinations_are_refused():
    for exposure in (Exposure(ratio=(75, 25)), Exposure(l2_onset=3), Exposure(budget="matched")):
        with pytest.raises(ExposureError, match="run en has one language"):
            exposure.check_run(["en"], 24)
    with pytest.raises(ExposureError, match="3 shares for the 2 languages"):
        Exposure(ratio=(50, 25, 25)).check_run(["en", "fr"], 24)
    with pytest.raises(ExposureError, match="never join"):
        Exposure(l2_onset=25).check_run(["en", "fr"], 24)
    with pytest.raises(ExposureError, match="only 13 familiar"):
        Exposure(vocab_size=14).select_vocabulary([f"c{k}" for k in range(13)], 0)
    Exposure(data_fraction=0.5, vocab_size=4).check_run(["en"], 24)  # amount of data and vocabulary: any run


def test_ratio_is_met_every_epoch_from_each_languages_own_pool():
    rng = np.random.default_rng(0)
    for ratio, budget, expected in [((75, 25), "sum", (300, 100)), ((90, 10), "sum", (360, 40)),
                                    ((50, 50), "matched", (150, 150)), ((10, 90), "matched", (30, 270))]:
        exposure = Exposure(ratio, budget)
        for epoch in range(3):
            order = exposure.epoch_order([EN, FR], epoch, rng)
            en, fr = np.isin(order, EN), np.isin(order, FR)
            assert (en | fr).all() and (en.sum(), fr.sum()) == expected
            for pool, drawn in ((EN, order[en]), (FR, order[fr])):  # repeats only when the pool is too small
                seen = np.bincount(drawn - pool[0], minlength=len(pool))
                assert seen.max() - seen.min() <= 1 and seen.max() == -(-len(drawn) // len(pool))
    a, b = (Exposure((90, 10)).epoch_order([EN, FR], 0, np.random.default_rng(s)) for s in (1, 2))
    assert not np.array_equal(np.sort(a[np.isin(a, FR)]), np.sort(b[np.isin(b, FR)]))  # drawn afresh


def test_matched_budget_equals_the_monolingual_first_language():
    mono = Exposure().epoch_sizes([len(EN)], 4)
    assert Exposure(budget="matched").epoch_sizes([len(EN), len(FR)], 4) == mono == [300] * 4
    order = Exposure(budget="matched").epoch_order([EN, FR], 0, np.random.default_rng(0))
    assert len(order) == 300 and len(np.unique(order)) == 300 and np.isin(order, FR).sum() == 75  # pools' proportion
    assert Exposure().epoch_sizes([len(EN), len(FR)], 2) == [400, 400]  # sum: both languages' data
    assert Exposure().epoch_sizes([len(EN)], 2, repeats=2) == [600, 600]  # the equal-steps control


def test_sequential_run_has_no_l2_before_its_onset():
    exposure = Exposure(l2_onset=3)
    rng = np.random.default_rng(0)
    orders = [exposure.epoch_order([EN, FR], epoch, rng) for epoch in range(5)]
    assert [int(np.isin(o, FR).sum()) for o in orders] == [0, 0, 100, 100, 100]
    assert [len(o) for o in orders] == exposure.epoch_sizes([300, 100], 5) == [300, 300, 400, 400, 400]
    assert Exposure(l2_onset=3, budget="matched").epoch_sizes([300, 100], 5) == [300] * 5
    steps = [-(-n // 60) for n in exposure.epoch_sizes([300, 100], 5)]
    schedule = make_schedule(5, steps)
    assert schedule.total_steps == sum(steps) == 31 and schedule.lr(sum(steps) - 1) < schedule.lr(sum(steps) // 2)


def test_default_order_is_the_papers_permutation():
    """The default exposure draws exactly what the loop drew before exposure regimes existed."""
    for repeats in (1, 2):
        expected = np.random.default_rng(7).permutation(np.tile(np.concatenate([EN, FR]), repeats))
        assert np.array_equal(Exposure().epoch_order([EN, FR], 0, np.random.default_rng(7), repeats), expected)


def test_data_fraction_and_vocabulary_are_nested_subsets():
    rng = np.random.default_rng(0)
    concepts = rng.choice([f"c{k}" for k in range(6)], 400)
    langs = np.repeat(["en", "fr"], 200)
    keep = rng.random(400) < 0.8
    kept = {f: Exposure(data_fraction=f).training_tokens(concepts, keep, langs, seed=3) for f in (0.25, 0.5, 1.0)}
    assert np.array_equal(kept[1.0], keep)
    assert not (kept[0.25] & ~kept[0.5]).any() and not (kept[0.5] & ~keep).any()
    for lang in ("en", "fr"):
        for c in np.unique(concepts):
            of = (langs == lang) & (concepts == c)
            assert kept[0.5][of].sum() == np.ceil(0.5 * (keep & of).sum())  # a fraction of each concept, per language
    # a language keeps the same tokens without the other language beside it
    alone = Exposure(data_fraction=0.5).training_tokens(concepts[:200], keep[:200], langs[:200], seed=3)
    assert np.array_equal(alone, kept[0.5][:200])
    assert not np.array_equal(Exposure(data_fraction=0.5).training_tokens(concepts, keep, langs, seed=4), kept[0.5])
    vocabulary = [f"c{k:02d}" for k in range(20)]
    subsets = [set(Exposure(vocab_size=n).select_vocabulary(vocabulary, seed=1)) for n in (4, 8, 20)]
    assert [len(s) for s in subsets] == [4, 8, 20] and subsets[0] < subsets[1] < subsets[2]


def test_sweep_is_the_product_of_the_values():
    exposures = sweep_exposures(["75:25", "50:50", "75:25"], [], [], ["0.5", "1"], [])
    assert [e.suffix() for e in exposures] == ["-r75-data50", "-r75", "-r50-data50", "-r50"]
    assert sweep_exposures([], [], [], [], []) == [Exposure()]
    with pytest.raises(ExposureError, match="--data-fraction 'half' is not a number"):
        sweep_exposures([], [], [], ["half"], [])
    with pytest.raises(ExposureError, match="75-25"):
        sweep_exposures(["75-25"], [], [], [], [])


def test_conditioned_runs_are_deterministic_and_recorded(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    exposure = Exposure(ratio=(75, 25), l2_onset=2, data_fraction=0.5, vocab_size=6)
    config = tiny_config(tiny_cache, epochs=2, exposure=exposure)
    assert config.folder_name() == "en+fr-w64-s0-r75-onset2-data50-vocab6"
    a, b = (train_run(config, tmp_path / name, stores, progress=False) for name in ("a", "b"))
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert drop(_metrics(a)) == drop(_metrics(b))
    saved = RunFolder.open(a).config
    assert saved["exposure"] == exposure.to_dict() and RunFolder.open(a).exposure == exposure
    assert saved["vocabulary"] == exposure.select_vocabulary(sorted(FAMILIAR), 0) and len(saved["vocabulary"]) == 6
    # 6 concepts × 6 train tokens per language, half kept: 18 per language; epoch 1 has en only
    assert saved["train_audio"] == 36 and saved["steps_per_epoch"] == [-(-18 // 8), -(-36 // 8)]
    assert RunFolder.open(a).train_langs == "en+fr-r75-onset2-data50-vocab6"


def test_matched_run_has_the_monolingual_runs_steps(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    runs = [train_run(tiny_config(tiny_cache, langs, epochs=1, exposure=exposure), tmp_path / name, stores,
                      progress=False)
            for langs, exposure, name in [(("en",), Exposure(), "mono"),
                                          (("en", "fr"), Exposure(budget="matched"), "bi")]]
    mono, bi = (RunFolder.open(run).config for run in runs)
    assert mono["steps_per_epoch"] == bi["steps_per_epoch"] == -(-78 // 8)
    assert mono["exposure"] == DEFAULTS


def test_a_run_from_before_exposure_regimes_is_the_default_condition(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    config = tiny_config(tiny_cache, ("en",), epochs=1)
    assert config.folder_name() == "en-w64-s0"
    run = train_run(config, tmp_path / "old", stores, progress=False)
    folder = RunFolder.open(run)
    older = {k: v for k, v in folder.config.items() if k != "exposure"}
    folder.create(older)
    assert RunFolder.open(run).differing_fields(config) == {} and RunFolder.open(run).exposure == Exposure()
    assert RunFolder.open(run).differing_fields(tiny_config(tiny_cache, ("en",), epochs=1,
                                                            exposure=Exposure(vocab_size=4))) != {}


def test_cli_ratio_sweep_and_clear_refusals(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    tiny = ["--epochs", "1", "--width", "64", "--batch-size", "16", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(train_heads, ["--langs", "en", "fr", "--ratio", "75:25", "25:75", *tiny])
    assert result.exit_code == 0, result.output
    root = vgsme_home / "runs" / "main"
    assert sorted(p.name for p in root.iterdir()) == ["en+fr-w64-s0-r25", "en+fr-w64-s0-r75"]
    assert json.loads((root / "en+fr-w64-s0-r25" / "config.json").read_text())["exposure"]["ratio"] == [25, 75]
    for args, message in [(["--configs", "en", "en+fr", "--ratio", "75:25"], "run en has one language"),
                          (["--langs", "en", "fr", "--vocab-size", "99"], "only 13 familiar concepts"),
                          (["--langs", "en", "--data-fraction", "0"], "(0, 1]")]:
        result = CliRunner().invoke(train_heads, [*args, *tiny])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    help_text = CliRunner().invoke(train_heads, ["--help"]).output
    help_text = " ".join(help_text.split())
    assert "--equal-steps matches the other way" in help_text and "as evenly as possible" in help_text


def test_save_epochs_keeps_a_consistent_trajectory(tiny_cache, tmp_path):
    from safetensors.torch import load_file

    stores = LoadedStores("cpu")
    plain = train_run(tiny_config(tiny_cache, ("en",), epochs=2), tmp_path / "plain", stores, progress=False)
    config = tiny_config(tiny_cache, ("en",), epochs=2, save_epochs=True)
    folder = RunFolder.open(train_run(config, tmp_path / "traj", stores, progress=False))
    assert folder.config["save_epochs"] is True and RunFolder.open(plain).config["save_epochs"] is False
    assert sorted(p.name for p in (folder.path / "epochs").iterdir()) == [f"epoch-00{k}.safetensors" for k in range(3)]
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert drop(_metrics(folder.path)) == drop(_metrics(plain))  # saving changes no number
    weights = {k: load_file(folder.epoch_checkpoint_path(k)) for k in range(3)}
    torch.manual_seed(config.seed)
    initial = TwoTower(config.audio_dim, config.image_dim, config.width, config.logit_mode, dropout=config.dropout)
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(weights[0], {k: v.contiguous() for k, v in initial.state_dict().items()})
    assert same(weights[2], load_file(folder.checkpoint_path("last")))
    assert same(weights[folder.best_epoch], load_file(folder.checkpoint_path("best")))
    assert not same(weights[0], weights[1])
    # killed after epoch 2's commit (state.pt) but before its files: the rerun writes the same weights
    folder.epoch_checkpoint_path(2).unlink()
    folder.update(status="running")
    train_run(config, folder.path, stores, progress=False)
    assert same(load_file(folder.epoch_checkpoint_path(2)), weights[2])
