"""`train-heads` end to end on tiny stores in the default cache folder."""
import json
import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cache import layout
from train.cli import train_heads
from train.runs import RunConfigError, parse_seeds

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import write_tiny_cache  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


TINY = ["--epochs", "1", "--width", "64", "--batch-size", "16", "--device", "cpu"]


def test_equals_forms_name_the_same_run_and_accuracy_prints_as_percent(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    result = invoke("--langs=en", "fr", *TINY)
    assert result.exit_code == 0, result.output
    assert re.search(r"familiar acc \d+\.\d %; last acc \d+\.\d %", result.output), result.output
    run_dir = vgsme_home / "runs" / "main" / "en+fr-w64-s0"
    stamp = (run_dir / "state.pt").stat().st_mtime_ns
    assert invoke("--langs=en,fr", *TINY).exit_code == 0
    assert (run_dir / "state.pt").stat().st_mtime_ns == stamp  # the same run: complete, not retrained


def test_option_errors_are_one_clean_line(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    for args, expected in [(["--seeds", "3-1"], "seed range '3-1' is empty"),
                           (["--seeds", ","], "no seeds"),
                           (["--audio-store", "de=x.h5"], "no run trains on 'de'"),
                           (["--audio-store", "en"], "LANG=PATH"),
                           (["--widths", "100"], "multiple of 64"),
                           (["--exclude-concepts", "nautilus", "dog"], "--exclude-concepts nautilus: no such concept")]:
        result = CliRunner().invoke(train_heads, ["--langs", "en", *TINY, "--quiet", *args])
        assert result.exit_code == 1 and expected in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (vgsme_home / "runs").exists()  # refused before any run folder was made


def test_help_explains_every_option():
    text = CliRunner().invoke(train_heads, ["-h"]).output
    for option in ("--exclude-concepts", "--device", "--precision", "--quiet", "--verbose", "--force", "--audio-store"):
        assert option in text


def test_exclude_concepts_recorded_sorted(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    result = invoke("--langs", "en", *TINY, "--exclude-concepts", "dog,cow", "ball")
    assert result.exit_code == 0, result.output
    config = json.loads((vgsme_home / "runs" / "main" / "en-w64-s0" / "config.json").read_text())
    assert config["exclude_concepts"] == ["ball", "cow", "dog"]
    assert not {"cow", "dog"} & set(config["vocabulary"])


def test_nan_loss_fails_cleanly_then_other_options_replace_the_run(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    run_dir = vgsme_home / "runs" / "main" / "en-w64-s0"
    outputs = []
    for _ in range(2):  # a rerun with the same options fails the same way
        result = invoke("--langs", "en", *TINY, "--lr", "1e6")
        assert result.exit_code == 1 and "Traceback" not in result.output
        outputs.append(result.output)
        assert "en-w64-s0" in result.output and re.search(r"loss became nan at epoch 1, step \d+", result.output)
        assert "--lr" in result.output and "--precision fp32" in result.output and "cache verify" in result.output
        config = json.loads((run_dir / "config.json").read_text())
        assert config["status"] == "failed" and "nan" in config["failure"]
        assert not (run_dir / "state.pt").exists()  # the diverged epoch was not committed
    assert outputs[0] == outputs[1]
    result = invoke("--langs", "en", *TINY, "--lr", "1e-3")  # other options: no --force needed
    assert result.exit_code == 0, result.output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "complete" and config["lr_max"] == 1e-3 and "failure" not in config


def test_a_file_where_the_runs_folder_must_be_is_a_clean_error(vgsme_home, tmp_path):
    write_tiny_cache(layout.cache_dir("demo"))
    (tmp_path / "a-file").write_text("")  # the read-only case's class of fault, testable as root too
    result = invoke("--langs", "en", *TINY, "--out", str(tmp_path / "a-file" / "runs"))
    assert result.exit_code == 1 and "cannot write" in result.output and "is a file" in result.output
    assert "Traceback" not in result.output


def test_read_only_runs_root_is_a_clean_error(vgsme_home, tmp_path):
    write_tiny_cache(layout.cache_dir("demo"))
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0o500)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        result = invoke("--langs", "en", *TINY, "--out", str(root))
        assert result.exit_code == 1 and "cannot write" in result.output and "writable" in result.output
        assert "Traceback" not in result.output and list(root.iterdir()) == []
    finally:
        root.chmod(0o700)


def test_parse_seeds_refuses_empty_ranges():
    with pytest.raises(RunConfigError, match="empty"):
        parse_seeds("3-1")
    assert parse_seeds("2-2") == [2]


def test_progress_in_a_log_is_one_line_per_epoch(vgsme_home):
    """Not a terminal (CliRunner's stderr): no redrawn bars, one plain line per epoch."""
    write_tiny_cache(layout.cache_dir("demo"))
    result = CliRunner().invoke(train_heads, ["--langs", "en", "--epochs", "3", "--width", "64", "--batch-size", "16",
                                              "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("en-w64-s0 ")]
    assert [line.split(":")[0] for line in epoch_lines] == [f"en-w64-s0 {k}/3" for k in (1, 2, 3)]


def test_a_run_being_trained_elsewhere_is_refused(vgsme_home):
    """Two processes training one run folder would interleave its files: the second is refused, cleanly."""
    from cache.locks import acquire, lock_file_for

    write_tiny_cache(layout.cache_dir("demo"))
    held = acquire(lock_file_for(vgsme_home / "runs" / "main" / "en-w64-s0"), "a test")  # as another live trainer would
    try:
        result = invoke("--langs", "en", "--epochs", "1", "--width", "64", "--batch-size", "16", "--device", "cpu")
        assert result.exit_code == 1 and "another process is training" in result.output
        assert "Traceback" not in result.output
    finally:
        held.close()
    assert invoke("--langs", "en", "--epochs", "1", "--width", "64", "--batch-size", "16", "--device", "cpu").exit_code == 0
