"""Reproducible runs and sweeps: `train-heads --from RUN`, `--sweep FILE`, and sweeps that survive a failed run."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from cache import layout
from train.cli import train_heads
from train.sweepfile import read_sweep_file

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import write_tiny_cache  # noqa: E402

TINY = ["--epochs", "2", "--width", "64", "--batch-size", "16", "--precision", "fp32"]
TINY_YAML = "epochs: 2\nwidth: 64\nbatch-size: 16\nprecision: fp32\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args):
    return CliRunner().invoke(train_heads, [*map(str, args)], catch_exceptions=False)


def metrics_without_seconds(run_dir: Path) -> list[list[str]]:
    header, *rows = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    keep = [i for i, column in enumerate(header) if column != "seconds"]
    return [[row[i] for i in keep] for row in [header, *rows]]


def run_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def test_from_retrains_a_run_identically_and_resumes(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    assert invoke("--langs", "en", "fr", *TINY, "--seeds", "3", "-q").exit_code == 0
    source = vgsme_home / "runs" / "main" / "en+fr-w64-s3"
    again = vgsme_home / "elsewhere" / "copy-of-en+fr"
    result = invoke("--from", source, "--out", again, "-q")
    assert result.exit_code == 0, result.output
    assert metrics_without_seconds(again) == metrics_without_seconds(source)
    for checkpoint in ("best", "last"):
        a, b = load_file(source / f"{checkpoint}.safetensors"), load_file(again / f"{checkpoint}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recorded, retrained = run_config(source), run_config(again)
    assert retrained["status"] == "complete"
    assert {k: v for k, v in retrained.items() if k != "code_revision"} == \
        {k: v for k, v in recorded.items() if k != "code_revision"}
    stamp = (again / "state.pt").stat().st_mtime_ns
    result = invoke("--from", source / "config.json", "--out", again, "-q")  # the config.json form; complete: kept
    assert result.exit_code == 0, result.output
    assert (again / "state.pt").stat().st_mtime_ns == stamp


def test_from_refuses_changed_options_and_stores(vgsme_home, tmp_path):
    cache_dir = write_tiny_cache(layout.cache_dir("demo"))
    assert invoke("--langs", "en", *TINY, "-q").exit_code == 0
    source = vgsme_home / "runs" / "main" / "en-w64-s0"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("langs: en\n")
    for args, expected in [(["--epochs", "3"], "--epochs would change"),
                           (["--seeds", "1"], "--seeds would change"),
                           (["--study", "x"], "--study would change"),
                           (["--sweep", sweep], "--sweep, --langs would change")]:
        result = invoke("--from", source, "--out", tmp_path / "new", *args)
        assert result.exit_code == 1 and expected in result.output, (args, result.output)
    result = invoke("--from", source)
    assert result.exit_code == 1 and "--from needs --out" in result.output
    result = invoke("--from", source, "--out", source)
    assert result.exit_code == 1 and "give a new folder" in result.output
    result = invoke("--langs", "en", *TINY, "--allow-changed-stores")
    assert result.exit_code == 1 and "goes with --from" in result.output

    for path in cache_dir.iterdir():  # the same stores' paths, other features
        path.unlink()
    write_tiny_cache(cache_dir, noise=0.6)
    result = invoke("--from", source, "--out", tmp_path / "new", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "audio-en.synthetic.h5" in result.output and "--allow-changed-stores" in result.output
    assert "re-extract" in result.output and not (tmp_path / "new").exists()
    result = invoke("--from", source, "--out", tmp_path / "new", "--allow-changed-stores", "-q")
    assert result.exit_code == 0, result.output
    assert run_config(tmp_path / "new")["store_fingerprints"] != run_config(source)["store_fingerprints"]

    (cache_dir / "image.synthetic.h5").unlink()
    result = invoke("--from", source, "--out", tmp_path / "other", "--allow-changed-stores", "-q")
    assert result.exit_code == 1 and "image.synthetic.h5" in result.output and "cannot be opened" in result.output
    assert "re-extract" in result.output and not (tmp_path / "other").exists()


def test_sweep_file_expands_to_the_command_lines_runs(vgsme_home, tmp_path):
    write_tiny_cache(layout.cache_dir("demo"))
    result = invoke("--configs", "en", "en+fr", "--seeds", "0-1", *TINY, "--study", "cli", "-q")
    assert result.exit_code == 0, result.output
    sweep = tmp_path / "paper.yaml"
    sweep.write_text("# the two-configuration sweep\nstudy: file\nconfigs: [en, en+fr]\nseeds: 0-1\n" + TINY_YAML)
    result = invoke("--sweep", sweep, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    cli, file = vgsme_home / "runs" / "cli", vgsme_home / "runs" / "file"
    names = sorted(p.name for p in cli.iterdir())
    assert names == ["en+fr-w64-s0", "en+fr-w64-s1", "en-w64-s0", "en-w64-s1"]
    assert sorted(p.name for p in file.iterdir()) == sorted(names + ["sweep.yaml"])
    for name in names:
        assert run_config(file / name) == run_config(cli / name)
    assert (file / "sweep.yaml").read_text() == sweep.read_text()

    # the same sweep as JSON (other spellings of the same options) is the same sweep: every run skipped
    as_json = tmp_path / "paper.json"
    as_json.write_text(json.dumps({"study": "file", "configs": "en,en+fr", "seeds": "0-1", "epochs": 2, "width": 64,
                                   "batch_size": 16, "precision": "fp32"}))
    result = invoke("--sweep", as_json)
    assert result.exit_code == 0, result.output
    assert "4 runs: 0 complete, 4 skipped (already complete), 0 failed" in result.output

    sweep.write_text(sweep.read_text().replace("seeds: 0-1", "seeds: 0"))  # another sweep, the same study
    result = invoke("--sweep", sweep, "-q")
    assert result.exit_code == 1 and "holds a different sweep" in result.output and "--force" in result.output


@pytest.mark.parametrize("text, args, expected", [
    ("configs: [en]\nepoch: 2\n", [], "(line 2): unknown key 'epoch'"),
    ("configs: [en]\nconfigs: [fr]\n", [], "(line 2): key 'configs' is given twice"),
    ("configs: [en]\nwidth: 64\nwidths: [128]\n", [], "sets --widths a second time"),
    ("configs: [en]\nepochs: zero\n", [], "(line 2): 'epochs'"),
    ("configs: [en]\nequal-steps: 1\n", [], "'equal-steps' is a flag"),
    ("configs: [en]\nepochs: {a: 1}\n", [], "'epochs' takes one value"),
    ("configs: [en\n", [], "not valid YAML"),
    ("- en\n", [], "a mapping of option names"),
    ("configs: [en]\nepochs: 2\n", ["--epochs", "3"], "--epochs is given both in the sweep file"),
    ("configs: [en]\n", ["--epochs", "3"], "write it in the sweep file instead"),
])
def test_sweep_file_errors_name_the_key_and_line(vgsme_home, tmp_path, text, args, expected):
    write_tiny_cache(layout.cache_dir("demo"))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(text)
    result = invoke("--sweep", sweep, *args, "-q")
    assert result.exit_code == 1 and expected in result.output, result.output
    assert "Traceback" not in result.output and str(sweep) in result.output
    assert not (vgsme_home / "runs").exists()  # refused before any run folder was made


def test_sweep_file_values_are_read_as_written(tmp_path):
    """YAML 1.1 would read 75:25 as the number 4525 and the language `no` as false: values stay text."""
    sweep = tmp_path / "s.yml"
    sweep.write_text("configs: [no, no+en]\nratio: [75:25, 50:50]\nequal-steps: true\nepochs: 3\n"
                     "audio-store: {no: a.h5, en: [b.h5, c.h5]}\n")
    defaults = read_sweep_file(sweep, train_heads).defaults
    assert defaults == {"configs": ["no", "no+en"], "ratios": ["75:25", "50:50"], "equal_steps": True,
                        "epochs": "3", "audio_store_opts": ["no=a.h5", "en=b.h5,c.h5"]}


def test_a_failed_run_does_not_stop_the_sweep_and_a_rerun_resumes(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    assert invoke("--langs", "en", *TINY, "--epochs", "1", "--study", "s", "-q").exit_code == 0
    blocker = vgsme_home / "runs" / "s" / "en-w64-s0"  # holds a run of other options: this sweep's first run fails
    result = invoke("--configs", "en", "fr", "en+fr", *TINY, "--study", "s")
    assert result.exit_code == 1 and "Traceback" not in result.output
    for line in ("run 1/3 done (1 failed)", "run 2/3 done (1 failed)", "run 3/3 done (1 failed)",
                 "3 runs: 2 complete, 0 skipped (already complete), 1 failed", "1 of 3 runs failed",
                 "en-w64-s0: run folder"):
        assert line in result.output, (line, result.output)
    assert run_config(vgsme_home / "runs" / "s" / "fr-w64-s0")["status"] == "complete"
    assert run_config(vgsme_home / "runs" / "s" / "en+fr-w64-s0")["status"] == "complete"
    assert run_config(blocker)["epochs"] == 1  # the failed run's folder is left as it was

    shutil.rmtree(blocker)  # the fix; the same command again trains what is missing, skips what is complete
    result = invoke("--configs", "en", "fr", "en+fr", *TINY, "--study", "s", "-q")
    assert result.exit_code == 0, result.output
    assert "3 runs: 1 complete, 2 skipped (already complete), 0 failed" in result.output
    assert "done (" not in result.output  # --quiet: no progress lines, the summary still


def test_a_diverged_run_does_not_stop_the_next(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"))
    result = invoke("--configs", "en", "fr", *TINY, "--lr", "1e6", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "2 of 2 runs failed" in result.output and "fr-w64-s0: run" in result.output, result.output
    for name in ("en-w64-s0", "fr-w64-s0"):  # the second run was trained (and failed) after the first failed
        assert run_config(vgsme_home / "runs" / "main" / name)["status"] == "failed"
