"""Every command and subcommand answers `-h` and `--help`, explains every option, and has -q / -v."""
from __future__ import annotations

import importlib

import click
import pytest
from click.testing import CliRunner

COMMANDS = {
    "extract-features": ("extract.cli", "extract_features"),
    "vgsme-demo-corpus": ("extract.demo.cli", "demo_corpus"),
    "train-heads": ("train.cli", "train_heads"),
    "analyse": ("analyse.cli", "analyse"),
    "python -m cache": ("cache.__main__", "cli"),
}


def _walk(root: click.Command, command: click.Command, name: str, path: tuple[str, ...] = (), parents=()):
    """(name, root, argv path, command, its parent commands) for a command and every subcommand under it."""
    yield name, root, path, command, parents
    if isinstance(command, click.Group):
        for sub_name, sub in sorted(command.commands.items()):
            yield from _walk(root, sub, f"{name} {sub_name}", path + (sub_name,), parents + (command,))


def _cases():
    for name, (module, attr) in COMMANDS.items():
        root = getattr(importlib.import_module(module), attr)
        yield from _walk(root, root, name)


CASES = list(_cases())
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("name,root,path,command,parents", CASES, ids=IDS)
def test_every_command_answers_help(name, root, path, command, parents, flag):
    result = CliRunner().invoke(root, [*path, flag])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and param.name != "help":
            assert param.help, f"{name}: option {param.opts[0]} has no help text"
            assert param.opts[0] in result.output


@pytest.mark.parametrize("name,root,path,command,parents", [c for c in CASES if not isinstance(c[3], click.Group)],
                         ids=[c[0] for c in CASES if not isinstance(c[3], click.Group)])
def test_every_command_has_quiet_and_verbose(name, root, path, command, parents):
    """One set of verbosity options everywhere (on the command itself or on a group above it)."""
    opts = {o for c in (*parents, command) for p in c.params if isinstance(p, click.Option) for o in p.opts}
    assert {"--quiet", "--verbose"} <= opts, f"{name} lacks --quiet / --verbose"


@pytest.mark.parametrize("name,root,path,command,parents", [c for c in CASES if not isinstance(c[3], click.Group)],
                         ids=[c[0] for c in CASES if not isinstance(c[3], click.Group)])
def test_device_defaults_agree(name, root, path, command, parents):
    """`--device` means the same everywhere: default auto."""
    for p in command.params:
        if isinstance(p, click.Option) and "--device" in p.opts:
            assert p.default == "auto", f"{name}: --device defaults to {p.default!r}"
