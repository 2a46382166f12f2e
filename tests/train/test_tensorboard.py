"""`train-heads --tensorboard`: event files that TensorBoard's own reader finds equal to metrics.csv, also after a
run is interrupted and resumed, and for a live reader that follows the run; never needed without the flag."""
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train.loop
from cache import layout
from train.cli import train_heads
from train.loop import LoadedStores, train_run
from train.runs import METRIC_COLUMNS, RunFolder

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import tiny_config, write_tiny_cache  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = ["--epochs", "3", "--width", "64", "--batch-size", "16", "--device", "cpu", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("cache"), langs=("en",), per_concept=6)


def read_events(folder: Path, reader: EventAccumulator | None = None) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the folder as TensorBoard reads it: tag -> [(step, value), ...]."""
    reader = reader or EventAccumulator(str(folder))
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def as_series(metrics: list[dict]) -> dict[str, list[tuple[int, float]]]:
    return {column: [(row["epoch"], row[column]) for row in metrics] for column in METRIC_COLUMNS if column != "epoch"}


def assert_events_match(events: dict, metrics: list[dict]) -> None:
    expected = as_series(metrics)
    assert sorted(events) == sorted(expected)
    for tag, series in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in series], tag  # each epoch once, in order
        assert [value for _, value in events[tag]] == pytest.approx([value for _, value in series], rel=1e-6), tag


def test_cli_tensorboard_writes_every_metric_of_every_epoch(vgsme_home):
    write_tiny_cache(layout.cache_dir("demo"), langs=("en",), per_concept=6)
    result = CliRunner().invoke(train_heads, ["--langs", "en", *TINY, "--tensorboard"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = RunFolder.open(vgsme_home / "runs" / "main" / "en-w64-s0")
    assert run.tensorboard_dir.parent == run.path
    assert len(run.metrics) == 3
    assert_events_match(read_events(run.tensorboard_dir), run.metrics)


def test_interrupted_run_resumes_with_each_epoch_once_for_a_live_reader_too(tiny_cache, tmp_path, monkeypatch):
    config = tiny_config(tiny_cache, ("en",), epochs=4, tensorboard=True)
    run_dir = tmp_path / "run"
    real_write = train.loop.write_run_events

    def killed_after_committing_epoch_3(folder):  # the worst moment: epoch 3 is committed, its events not written
        if len(folder.metrics) == 3:
            raise KeyboardInterrupt
        return real_write(folder)

    monkeypatch.setattr(train.loop, "write_run_events", killed_after_committing_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, run_dir, LoadedStores("cpu"), progress=False)
    run = RunFolder.open(run_dir)
    assert len(run.metrics) == 3  # metrics.csv has epoch 3, the events stop at 2
    live = EventAccumulator(str(run.tensorboard_dir))  # a TensorBoard open on the run while it was down
    assert_events_match(read_events(run.tensorboard_dir, live), run.metrics[:2])

    monkeypatch.setattr(train.loop, "write_run_events", real_write)
    # rerun even without the flag: a folder that has event files keeps them in step (same run: it resumes)
    train_run(tiny_config(tiny_cache, ("en",), epochs=4), run_dir, LoadedStores("cpu"), progress=False)
    metrics = RunFolder.open(run_dir).metrics
    assert len(metrics) == 4
    assert_events_match(read_events(run.tensorboard_dir), metrics)  # a fresh reader
    assert_events_match(read_events(run.tensorboard_dir, live), metrics)  # the live one: no duplicate, none lost


def test_events_are_not_part_of_a_runs_identity(tiny_cache, tmp_path):
    stores = LoadedStores("cpu")
    run_dir = train_run(tiny_config(tiny_cache, ("en",), epochs=2), tmp_path / "run", stores, progress=False)
    run = RunFolder.open(run_dir)
    assert not run.tensorboard_dir.exists()
    weights = run.checkpoint_path("best").stat().st_mtime_ns
    train_run(tiny_config(tiny_cache, ("en",), epochs=2, tensorboard=True), run_dir, stores, progress=False)
    assert run.checkpoint_path("best").stat().st_mtime_ns == weights  # the same run: complete, not retrained
    assert_events_match(read_events(run.tensorboard_dir), run.metrics)  # its events come from metrics.csv


def block_tensorboard(monkeypatch) -> None:
    """Make `import tensorboard` (and torch's wrapper of it) fail, as on a machine without the package."""
    for module in [name for name in sys.modules if name == "tensorboard" or name.startswith("tensorboard.")
                   or name.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def test_without_the_package_the_flag_is_one_clear_error_and_training_needs_none(vgsme_home, monkeypatch):
    write_tiny_cache(layout.cache_dir("demo"), langs=("en",), per_concept=6)
    block_tensorboard(monkeypatch)
    result = CliRunner().invoke(train_heads, ["--langs", "en", *TINY, "--tensorboard"])
    assert result.exit_code == 1
    assert "pip install tensorboard" in result.output and "Traceback" not in result.output
    assert not (vgsme_home / "runs").exists()  # refused before anything was written

    result = CliRunner().invoke(train_heads, ["--langs", "en", *TINY, "--epochs", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not RunFolder.open(vgsme_home / "runs" / "main" / "en-w64-s0").tensorboard_dir.exists()
