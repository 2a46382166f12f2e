"""`train-heads --sweep FILE`: a sweep written down once, as YAML or JSON, with the command line's option names.

The file's values become the command's defaults (click's `default_map`), so a sweep file expands through the
very code path of the equivalent command line: the same checks, the same runs, the same folder names. The file
is the sweep's record, copied into the study folder (`sweep.yaml`); so an option that would change the sweep
may not also be given on the command line (it would make the copy lie), and a key the command does not know
is an error naming the key and its line, never ignored.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from cache.atomic import write_text
from cache.executors import EXECUTOR_PARAMS
from cache.clitools import split_values

# The copy of the sweep file in its study folder (JSON is valid YAML, so one name serves both).
SWEEP_COPY = "sweep.yaml"
# Options that say where and how a sweep runs, not what it is: never keys of a sweep file, allowed beside it.
RUNTIME_OPTIONS = ("sweep_file", "from_run", "out", "force", "threads", "quiet", "verbose", "help",
                   "allow_changed_stores", *EXECUTOR_PARAMS)
# Options a sweep file may set that may instead be given beside it (they do not change a run's numbers on CPU).
EITHER_PLACE = ("device", "tensorboard")
SUFFIXES = (".yaml", ".yml", ".json")


class SweepFileError(ValueError):
    """A sweep file that cannot be read, names an unknown option, or disagrees with the command line."""


@dataclass(frozen=True)
class SweepFile:
    """A parsed sweep file: `defaults` are click parameter values by parameter name, `lines` their lines."""

    path: Path
    text: str
    defaults: dict[str, Any]
    lines: dict[str, int]

    def where(self, name: str) -> str:
        return f"{self.path} (line {self.lines[name]})" if self.lines.get(name) else str(self.path)

    def check_command_line(self, ctx: click.Context) -> None:
        """Refuse an option given both in the file and on the command line, or one that changes the sweep given
        on the command line only (the study folder's copy of the file would no longer describe its runs)."""
        for param in ctx.command.params:
            if param.name in RUNTIME_OPTIONS or not given_on_command_line(ctx, param.name):
                continue
            option = _long_name(param)
            if param.name in self.defaults:
                raise SweepFileError(f"{option} is given both in the sweep file {self.where(param.name)} and on the "
                                     "command line: set it in one place")
            if param.name in EITHER_PLACE:
                continue
            raise SweepFileError(f"{option} on the command line with --sweep {self.path}: write it in the sweep file "
                                 f"instead (`{option[2:]}: ...`), which is the sweep's record; beside --sweep the "
                                 f"command line takes only {', '.join(_runtime_spellings(ctx))}")

    def save_copy(self, study_folder: Path, force: bool, command: click.Command) -> Path:
        """Copy the file to `study_folder/sweep.yaml` (atomically); a different sweep there is refused unless
        `force` (the same values in other spellings, comments or layout are the same sweep)."""
        copy = Path(study_folder) / SWEEP_COPY
        if copy.exists() and not force:
            try:
                same = read_sweep_file(copy, command, ".yaml").values() == self.values()
            except SweepFileError:
                same = False
            if not same:
                raise SweepFileError(f"{copy} holds a different sweep than {self.path}: give another --study (or "
                                     "--out), or --force to replace it (and retrain the runs of this sweep)")
        return write_text(copy, self.text)

    def values(self) -> dict[str, Any]:
        """The values with multi-value options' comma lists split (`en,fr` and `[en, fr]` are alike)."""
        return {name: split_values(value) if isinstance(value, list) else value for name, value in self.defaults.items()}


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option `name` (on the command line; a sweep file's values are defaults)."""
    return ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                              click.core.ParameterSource.ENVIRONMENT,
                                              click.core.ParameterSource.PROMPT)


def read_sweep_file(path: Path, command: click.Command, suffix: str | None = None) -> SweepFile:
    """Parse `path` (YAML or JSON by its suffix, or `suffix`) against `command`'s options; every fault names
    the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SweepFileError(f"sweep file {path} cannot be read ({error})") from None
    entries, lines = _parse(path, text, suffix)
    options = _options_by_key(command)
    defaults: dict[str, Any] = {}
    found_lines: dict[str, int] = {}
    for key, value in entries.items():
        param = options.get(str(key).replace("_", "-"))
        where = f"{path} (line {lines[key]})" if lines.get(key) else str(path)
        if param is None:
            raise SweepFileError(f"{where}: unknown key {key!r}; a sweep file takes these option names: "
                                 f"{', '.join(sorted(options))} (see docs/training.md)")
        if param.name in defaults:
            raise SweepFileError(f"{where}: {key!r} sets {_long_name(param)} a second time")
        defaults[param.name] = _convert(param, value, key, where)
        found_lines[param.name] = lines.get(key, 0)
    return SweepFile(path, text, defaults, found_lines)


def _options_by_key(command: click.Command) -> dict[str, click.Option]:
    """Every long spelling (without `--`) of the command's options that a sweep file may set."""
    return {opt[2:]: param for param in command.params if isinstance(param, click.Option)
            and param.name not in RUNTIME_OPTIONS for opt in param.opts if opt.startswith("--")}


def _long_name(param: click.Parameter) -> str:
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def _runtime_spellings(ctx: click.Context) -> list[str]:
    return [_long_name(p) for p in ctx.command.params
            if p.name in EITHER_PLACE or p.name in RUNTIME_OPTIONS and p.name not in ("sweep_file", "from_run", "help",
                                                                                     "allow_changed_stores")]


def _parse(path: Path, text: str, suffix: str | None = None) -> tuple[dict, dict]:
    """The file's top-level mapping and each key's line (1-based; YAML by its nodes, JSON by a text search)."""
    suffix = suffix or path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SweepFileError(f"sweep file {path}: name it .yaml, .yml or .json (its suffix says how to read it)")
    if suffix == ".json":
        try:
            entries = json.loads(text, object_pairs_hook=_refuse_duplicates(path))
        except json.JSONDecodeError as error:
            raise SweepFileError(f"sweep file {path} is not valid JSON: {error}") from None
        text_lines = text.splitlines()
        lines = {key: next((i + 1 for i, line in enumerate(text_lines) if json.dumps(key) in line), 0)
                 for key in entries} if isinstance(entries, dict) else {}
    else:
        try:
            # BaseLoader: every scalar stays the text written, as on a command line (YAML 1.1 would read the
            # ratio 75:25 as the base-60 number 4525 and the language code `no` as false)
            root = yaml.compose(text, Loader=yaml.BaseLoader)
            entries = yaml.load(text, Loader=yaml.BaseLoader)
        except yaml.YAMLError as error:
            raise SweepFileError(f"sweep file {path} is not valid YAML: {error}") from None
        lines = {}
        if isinstance(root, yaml.MappingNode):
            for key_node, _ in root.value:
                if key_node.value in lines:
                    raise SweepFileError(f"{path} (line {key_node.start_mark.line + 1}): key {key_node.value!r} is "
                                         f"given twice (first on line {lines[key_node.value]})")
                lines[key_node.value] = key_node.start_mark.line + 1
    if not isinstance(entries, dict) or not entries:
        raise SweepFileError(f"sweep file {path}: write one `option: value` per line (e.g. `configs: [en, en+fr]`), "
                             "a mapping of option names to values")
    return entries, lines


def _refuse_duplicates(path: Path):
    def pairs(items: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in items]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise SweepFileError(f"sweep file {path}: key(s) {', '.join(map(repr, twice))} given twice")
        return dict(items)
    return pairs


def _convert(param: click.Option, value: Any, key: str, where: str) -> Any:
    """The value as the command line would give it (strings; a list for a multi-value option; a bool for a
    flag), checked by the option's own type so that a bad value names the file's line."""
    if param.is_flag:
        if isinstance(value, bool):  # JSON
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):  # YAML, read as text
            return value.lower() == "true"
        raise SweepFileError(f"{where}: {key!r} is a flag: write `{key}: true` or `{key}: false`")
    if param.multiple:
        if isinstance(value, dict):  # `audio-store: {en: a.h5, fr: [b.h5, c.h5]}` → en=a.h5 fr=b.h5,c.h5
            value = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()]
        items = value if isinstance(value, list) else [value]
        if not items or not all(_is_scalar(item) for item in items):
            raise SweepFileError(f"{where}: {key!r} takes one value or a list of values (e.g. `{key}: [a, b]`)")
        converted: Any = [str(item) for item in items]
    elif _is_scalar(value):
        converted = str(value)
    else:
        raise SweepFileError(f"{where}: {key!r} takes one value, not {type(value).__name__} {value!r}")
    try:
        param.type_cast_value(click.Context(click.Command("sweep")), converted)
    except click.BadParameter as error:
        raise SweepFileError(f"{where}: {key!r}: {error.message}") from None
    return converted


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)
