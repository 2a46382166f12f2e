"""One consistent `analyse` CLI: -h everywhere, every option explained, auto device/precision passed down,
`--opt=value` forms, accuracies in percent, one progress line per bar in logs, -q for none."""
import click
import pandas as pd
import pytest
from click.testing import CliRunner

from analyse.cli import analyse
from cache.hardware import PRECISIONS, resolve_precision
from tests.analyse.tiny_study import build_study

EMBEDDING = {"export", "familiar", "me", "variance", "embeddings", "translation", "trajectory", "all"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("cli"), langs=(("en",),), seeds=(0,))


def test_every_command_answers_h_and_explains_every_option():
    runner = CliRunner()
    assert runner.invoke(analyse, ["-h"]).exit_code == 0
    for name, command in analyse.commands.items():
        result = runner.invoke(analyse, [name, "-h"])
        assert result.exit_code == 0 and "Usage: analyse" in result.output, name
        options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        assert all(p.help for p in command.params if isinstance(p, click.Option)), name
        assert {"-q", "--quiet", "-v", "--verbose", "--study"} <= options, name
        params = {p.name: p for p in command.params}
        if name in EMBEDDING:
            assert params["device"].default == "auto" and params["precision"].default == "auto", name
            assert tuple(params["precision"].type.choices) == PRECISIONS, name
        else:
            assert "device" not in params and "precision" not in params, name
    # one meaning per option name: episodes per concept in `all`/`episodes`, items per concept in `variance`
    def opts(name):
        return {o for p in analyse.commands[name].params for o in p.opts}

    assert "--per-concept" in opts("all") and "--per-concept" in opts("episodes")
    assert "--items-per-concept" in opts("variance") and "--per-concept" not in opts("variance")


def test_precision_is_resolved_and_passed_to_the_embedding(runs, monkeypatch):
    import train.embed

    seen = []
    original = train.embed.embed_store

    def recording(*args, **kwargs):
        seen.append((kwargs["device"], kwargs["precision"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(train.embed, "embed_store", recording)
    runner = CliRunner()
    result = runner.invoke(analyse, ["export", str(runs), "--force", "--device=cpu", "--precision=fp32"])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {("cpu", "fp32")}
    seen.clear()
    result = runner.invoke(analyse, ["export", str(runs), "--force", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert set(seen) == {("cpu", resolve_precision("auto", "cpu").name)}  # never "auto"
    result = runner.invoke(analyse, ["export", str(runs), "--device", "cpu", "--precision", "fp16"])
    assert result.exit_code == 1 and "fp16 autocast is for CUDA GPUs" in result.output and "Traceback" not in result.output
    result = runner.invoke(analyse, ["me", str(runs), "--device", "tpu"])
    assert result.exit_code == 1 and "unknown device 'tpu'" in result.output


def test_scores_print_in_percent_with_one_progress_line(runs):
    result = CliRunner().invoke(analyse, ["me", str(runs), "--device", "cpu", "--precision", "fp32", "--episode-seed=0"])
    assert result.exit_code == 0, result.output
    accuracy = pd.read_csv(runs / "en-w64-s0" / "analysis" / "accuracy.csv").set_index("test")["accuracy"]
    assert f"en-w64-s0 (me en {accuracy['me']:.1f} %): " in result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("scoring: 1/1 run")], result.stderr
    quiet = CliRunner().invoke(analyse, ["me", str(runs), "-q", "--device", "cpu", "--precision", "fp32"])
    assert quiet.exit_code == 0 and "scoring" not in quiet.stderr


def test_equals_forms_and_items_per_concept(runs, tmp_path):
    result = CliRunner().invoke(analyse, ["variance", str(runs), "--items-per-concept=2", "--seed=1", "--device=cpu",
                                          "--precision=fp32", f"--out={tmp_path}", "-q"])
    assert result.exit_code == 0, result.output
    per_run = pd.read_csv(tmp_path / "variance_per_run.csv").set_index(["modality", "kind", "scope"])["n_items"]
    assert per_run[("audio", "familiar", "all")] == 13 * 2 and per_run[("image", "novel", "all")] == 19 * 2
    assert (tmp_path / "variance.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))  # figures and tables are written atomically
