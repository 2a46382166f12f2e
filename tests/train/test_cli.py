"""`train-heads` end to end on tiny stores in the default cache folder."""
import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cache import layout
from train.cli import train_heads
from train.runs import parse_seeds

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import write_tiny_cache  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args):
    result = CliRunner().invoke(train_heads, [*args, "--quiet"], catch_exceptions=False)
    return result


def test_train_heads_langs_as_written_then_noop_then_force(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    tiny = ["--epochs", "1", "--width", "64", "--batch-size", "16", "--device", "cpu"]
    result = invoke("--langs", "en", "fr", *tiny)
    assert result.exit_code == 0, result.output
    run_dir = vgsme_home / "runs" / "main" / "en+fr-w64-s0"
    assert str(run_dir) in result.output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "complete" and config["langs"] == ["en", "fr"]
    assert config["audio_stores"][1][0].endswith("audio-fr.synthetic.h5")
    assert {"best.safetensors", "last.safetensors", "state.pt", "metrics.csv"} <= {p.name for p in run_dir.iterdir()}
    stamp = (run_dir / "state.pt").stat().st_mtime_ns
    assert invoke("--langs", "en,fr", *tiny).exit_code == 0  # the comma form; complete: not retrained
    assert (run_dir / "state.pt").stat().st_mtime_ns == stamp
    assert invoke("--langs", "en", "fr", *tiny, "--force").exit_code == 0
    assert (run_dir / "state.pt").stat().st_mtime_ns != stamp


def test_sweep_of_configs_and_seeds(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    result = invoke("--configs", "en", "en+fr", "--seeds", "0-1", "--epochs", "1", "--width", "64", "--study", "s",
                    "--batch-size", "32", "--negatives", "shared")
    assert result.exit_code == 0, result.output
    made = sorted(p.name for p in (vgsme_home / "runs" / "s").iterdir())
    assert made == ["en+fr-w64-s0", "en+fr-w64-s1", "en-w64-s0", "en-w64-s1"]


def test_clear_errors(vgsme_home):
    result = CliRunner().invoke(train_heads, ["--langs", "en", "--quiet"])
    assert result.exit_code == 1 and "extract-features" in result.output  # no stores yet: says what to run
    result = CliRunner().invoke(train_heads, ["--langs", "en", "--configs", "fr"])
    assert result.exit_code == 1 and "not both" in result.output


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,5-6") == [0, 3, 5, 6]
