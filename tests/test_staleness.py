"""The chain of provenance from stores to analysis caches: nothing is silently stale.

A run records its stores' fingerprints; train-heads refuses a finished or half-trained run whose stores
changed (naming the store and what changed) until `--force`; analyse recomputes what it cached per run when
the stores, the weights or the episodes change, and refuses to read results scored on old ones.
"""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cache
from analyse import export
from analyse.episodes import episodes_for_run
from analyse.export import StaleAnalysisError, load_embedded, recorded_predictions_keys, run_embeddings
from analyse.study import StudyError, find_runs
from analyse.tests import collect, score_run
from tests.synthetic import FAMILIAR, NOVEL, synthetic_items, write_synthetic_store
from train.cli import train_heads
from train.loop import LoadedStores, train_run, train_sweep
from train.runs import RunConfig, RunConfigError, RunFolder, StaleStoreError, TrainingDiverged

DIM = 8
SPLITS = ("train", "train", "valid", "test", "test", "test")
CONCEPTS = list(FAMILIAR) + list(NOVEL)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def store_name(modality: str, lang: str = "en") -> str:
    return f"audio-{lang}.synthetic.h5" if modality == "audio" else "image.synthetic.h5"


def write_store(folder: Path, modality: str, lang: str = "en", seed: int = 0, **provenance_changes) -> Path:
    """A tiny store with train/valid/test items of every concept; rewritten in place when it exists.

    `provenance_changes` alter its provenance (e.g. corpus_hash, encoder); a rebuild with only another `seed`
    keeps the provenance of the store it replaces (same corpus, same encoder) but other features."""
    path = folder / store_name(modality, lang)
    items = synthetic_items(len(CONCEPTS) * len(SPLITS), modality, lang=lang, splits=SPLITS, sources=("s1", "s2"))
    provenance = None
    if path.exists():
        provenance = cache.open_store(path).provenance.replace(**provenance_changes)
        path.unlink()
    elif provenance_changes:
        raise ValueError("write the store once before changing its provenance")
    return write_synthetic_store(path, modality, items, np.random.default_rng(seed), dim=DIM, lang=lang,
                                 provenance=provenance)


def write_cache(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "fr"):
        write_store(folder, "audio", lang)
    write_store(folder, "image")
    return folder


def config(folder: Path, langs=("en",), **options) -> RunConfig:
    return RunConfig(langs=list(langs), audio_stores=[[str(folder / store_name("audio", lang))] for lang in langs],
                     image_store=[str(folder / store_name("image"))], audio_dim=DIM, image_dim=DIM,
                     **{"width": 64, "epochs": 1, "batch_size": 16, "precision": "fp32", **options})


TINY = ["--epochs", "1", "--width", "64", "--batch-size", "16", "--device", "cpu", "--precision", "fp32", "--quiet"]


def test_train_heads_refuses_a_finished_run_whose_store_changed_until_force(vgsme_home):
    folder = write_cache(vgsme_home / "cache" / "demo")
    run_dir = vgsme_home / "runs" / "main" / "en-w64-s0"
    assert CliRunner().invoke(train_heads, ["--langs", "en", *TINY]).exit_code == 0
    weights = (run_dir / "best.safetensors").read_bytes()
    write_store(folder, "audio", "en", corpus_hash="another-manifest")
    result = CliRunner().invoke(train_heads, ["--langs", "en", *TINY])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(folder / "audio-en.synthetic.h5") in result.output and "corpus_hash" in result.output
    assert "another-manifest" in result.output and "--force" in result.output
    assert "image.synthetic.h5" not in result.output  # only the changed store is named
    assert (run_dir / "best.safetensors").read_bytes() == weights  # refused: nothing was touched
    result = CliRunner().invoke(train_heads, ["--langs", "en", *TINY, "--force"])
    assert result.exit_code == 0, result.output
    run = RunFolder.open(run_dir)
    assert run.status == "complete" and run.stale_stores() == []
    assert run.config["provenance"][str(folder / "audio-en.synthetic.h5")]["corpus_hash"] == "another-manifest"


def test_a_half_trained_run_is_not_resumed_across_changed_stores(tmp_path):
    folder = write_cache(tmp_path / "cache")
    run_dir = train_run(config(folder, epochs=1), tmp_path / "run", LoadedStores("cpu"), progress=False)
    # as if killed after epoch 1 of 2: state.pt is there, the run is still `running`
    saved = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**saved, "status": "running", "epochs": 2}))
    write_store(folder, "audio", "en", seed=5)  # same provenance, other features (and frame counts)
    with pytest.raises(StaleStoreError, match="half-trained") as error:
        train_run(config(folder, epochs=2), run_dir, LoadedStores("cpu"), progress=False)
    assert "audio-en.synthetic.h5" in str(error.value) and "same provenance" in str(error.value)
    assert "image.synthetic.h5" not in str(error.value)


def test_audio_stores_of_one_run_must_share_the_encoder(tmp_path):
    folder = write_cache(tmp_path / "cache")
    write_store(folder, "audio", "fr", encoder_fingerprint="sha256:other-weights")
    with pytest.raises(RunConfigError, match="one encoder") as error:
        train_run(config(folder, ("en", "fr")), tmp_path / "run", LoadedStores("cpu"), progress=False)
    assert "audio-en.synthetic.h5" in str(error.value) and "audio-fr.synthetic.h5" in str(error.value)
    assert "other-weights" in str(error.value)
    write_store(folder, "audio", "fr", encoder_fingerprint="sha256:synthetic", layer=3)
    with pytest.raises(RunConfigError, match="layer 3"):
        train_run(config(folder, ("en", "fr")), tmp_path / "run", LoadedStores("cpu"), progress=False)


@pytest.fixture
def embed_calls(monkeypatch):
    """How often the run's test items were embedded (the expensive step the cache saves)."""
    calls = []
    real = export.embed_run

    def counting(run, device="cpu", precision="fp32"):
        calls.append(run.name)
        return real(run, device, precision)

    monkeypatch.setattr(export, "embed_run", counting)
    return calls


def test_analysis_caches_follow_stores_weights_and_episodes(tmp_path, embed_calls, caplog):
    folder = write_cache(tmp_path / "cache")
    runs_root = tmp_path / "runs"
    train_run(config(folder), runs_root / "en-w64-s0", LoadedStores("cpu"), progress=False)
    [run] = find_runs([runs_root])
    score_run(run, per_concept=4)
    assert len(embed_calls) == 1
    run_embeddings(run)
    score_run(run, ("familiar",), per_concept=4)
    assert len(embed_calls) == 1  # nothing changed: every cache is reused
    accuracy = collect([run], "accuracy.csv")

    # a store rebuilt with other features: the embeddings are recomputed, the old scores refused
    write_store(folder, "audio", "en", seed=9)
    with caplog.at_level(logging.WARNING):
        [run] = find_runs([runs_root])
    assert "changed since" in caplog.text and "audio-en.synthetic.h5" in caplog.text
    with pytest.raises(StaleAnalysisError, match="familiar, me"):
        collect([run], "accuracy.csv")
    score_run(run, ("me",), per_concept=4)  # rescoring one test rescores the other, now stale, too
    assert len(embed_calls) == 2
    assert load_embedded(run.analysis_dir)[1]["stores"] == run.current_store_fingerprints()
    assert len(collect([run], "accuracy.csv")) == len(accuracy)

    # retrained (new weights) under an analysis folder that survived (--force deletes it; a copy may not)
    shutil.copytree(run.analysis_dir, tmp_path / "kept-analysis")
    train_sweep([config(folder, lr_max=1e-3)], runs_root, name="en-w64-s0", force=True, progress=False,
                stores=LoadedStores("cpu"))
    shutil.copytree(tmp_path / "kept-analysis", run.analysis_dir)
    [run] = find_runs([runs_root])
    with pytest.raises(StaleAnalysisError):
        collect([run], "predictions.csv")
    run_embeddings(run)
    assert len(embed_calls) == 3
    score_run(run, per_concept=4)
    assert len(embed_calls) == 3
    collect([run], "predictions.csv")

    # episodes redrawn: the predictions scored on the old ones are refused, then rescored, embeddings reused
    before = collect([run], "predictions.csv")
    for test in ("familiar", "me"):
        episodes_for_run(run, "en", test, seed=1, per_concept=4, redraw=True)
    with pytest.raises(StaleAnalysisError, match="rescore"):
        collect([run], "accuracy.csv")
    score_run(run, ("familiar",), seed=1, per_concept=4)
    after = collect([run], "predictions.csv")
    assert len(embed_calls) == 3
    me_before, me_after = (f[f["test"] == "me"][["query_id", "pos_id", "neg_id"]].reset_index(drop=True)
                           for f in (before, after))
    assert not me_before.equals(me_after)  # the ME rows were rescored on the new episodes too

    # another precision: re-embedded, and the other test (scored in fp32) rescored with it
    score_run(run, ("familiar",), seed=1, per_concept=4, precision="bf16")
    assert len(embed_calls) == 4
    assert set(recorded_predictions_keys(run)[k]["precision"] for k in ("familiar/en", "me/en")) == {"bf16"}


def test_a_failed_run_is_not_analysed(tmp_path):
    folder = write_cache(tmp_path / "cache")
    with pytest.raises(TrainingDiverged):
        train_run(config(folder, lr_max=1e6), tmp_path / "runs" / "en-w64-s0", LoadedStores("cpu"), progress=False)
    with pytest.raises(StudyError, match="failed .*loss became nan.*lower --lr"):
        find_runs([tmp_path / "runs"])
