"""What every command shares: `-h`, multi-value options, `--quiet` / `-v`, clean errors, progress.

Commands stay thin: they parse options with these pieces and call one library function. Errors a user
can cause are `ValueError` subclasses (each package's own: `CorpusError`, `StoreError`, `RunConfigError`,
`StudyError`, `OutputError`, ...) or the OS errors of missing and unwritable files; `user_errors` turns all
of them into one line and exit status 1, never a traceback.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any, Callable

import click
from tqdm import tqdm

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, KeyError)


def _greedy_names(command: click.Command) -> set[str]:
    """The spellings of the command's options that take several values (`multiple=True`, not flags)."""
    return {name for p in command.params if isinstance(p, click.Option) and p.multiple and not p.is_flag
            for name in p.opts}


def expand_multi_values(args: list[str], greedy: set[str]) -> list[str]:
    """`--langs en fr`, `--langs=en fr` and `--langs en,fr` → `--langs en --langs fr` (click takes one value
    per occurrence). Values continue until the next token that starts with `-`."""
    out: list[str] = []
    current: str | None = None
    for token in args:
        name, sep, value = token.partition("=")
        if token.startswith("--") and sep and name in greedy:
            current = name
            out += [name, value]
            continue
        if token in greedy:
            current = token
            continue
        if token.startswith("-") and not _is_number(token):
            current = None
        elif current is not None:
            out += [current, token]
            continue
        out.append(token)
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


class Command(click.Command):
    """A click command whose multi-value options take several space-separated values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_values(args, _greedy_names(self)))


class Group(click.Group):
    """A click group whose subcommands are `Command`s and answer `-h`."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        super().__init__(*args, **kwargs)


def split_values(values: tuple[str, ...] | list[str]) -> list[str]:
    """Comma-separated values flattened: (`en,fr`, `nl`) → [`en`, `fr`, `nl`]."""
    return [v.strip() for value in values for v in str(value).split(",") if v.strip()]


def user_errors(fn: Callable) -> Callable:
    """Errors a user can cause end the command with one clean message and exit status 1."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except KeyError as error:
            raise click.ClickException(f"unknown key {error}") from None
        except USER_ERRORS as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:  # full disk, read-only file system, ...
            where = f" ({error.filename})" if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}{where}") from None
    return wrapper


def verbosity_options(fn: Callable) -> Callable:
    """`--quiet` (no progress, warnings only) and `-v` (log each step); the command gets `progress: bool`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, quiet: bool = False, verbose: int = 0, **kwargs: Any) -> Any:
        level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
        return fn(*args, progress=not quiet, **kwargs)
    wrapper = click.option("-v", "--verbose", count=True, help="Log each step (-vv: debug details).")(wrapper)
    return click.option("-q", "--quiet", is_flag=True, help="No progress output; warnings and results only.")(wrapper)


class PlainProgress:
    """tqdm's interface for logs: no redrawn bars, one line when done (and one a minute if it runs long)."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 every_s: float = 60.0, **_: Any):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s, self.postfix = every_s, ""
        self.started = self.last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every_s:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        self.last = time.perf_counter()
        elapsed = self.last - self.started
        total = f"/{self.total}" if self.total is not None else ""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total} {self.unit} in {elapsed:.1f} s ({rate:.0f} {self.unit}/s{tail})",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.n:
            self._line()
        self.n = 0

    def __iter__(self):
        raise TypeError("PlainProgress wraps totals, not iterables; use progress_iter")

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(enabled: bool = True, **kwargs: Any):
    """A tqdm bar on a terminal, one plain line per bar in a log, nothing when disabled."""
    if not enabled:
        return tqdm(disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(dynamic_ncols=True, leave=False, **kwargs)
    return PlainProgress(**kwargs)


def progress_iter(items, enabled: bool = True, **kwargs: Any):
    """Iterate `items` with a progress bar (plain lines when not a terminal)."""
    items = list(items)
    bar = progress_bar(enabled, total=len(items), **kwargs)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
