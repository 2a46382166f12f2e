"""`python -m cache info STORE...` and `python -m cache verify STORE...`."""
from __future__ import annotations

import json
import sys

import click

from .clitools import Command, Group, progress_iter, user_errors, verbosity_options
from .verify import store_info, verify_store

STORES_HELP = "Store paths (.h5 file or .zarr folder); a shard is checked on its own."


@click.group(cls=Group, help="Inspect and check vgsme feature stores (.h5 / .zarr).")
def cli() -> None:
    pass


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@cli.command(cls=Command, help="Print a store's provenance, item counts (per split, kind, source), shapes, dtype, "
                               "size and content fingerprint. STORES: " + STORES_HELP)
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per store instead of text.")
@verbosity_options
@user_errors
def info(stores: tuple[str, ...], as_json: bool, progress: bool) -> None:
    for path in stores:
        d = store_info(path)
        if as_json:
            click.echo(json.dumps(d))
            continue
        click.echo(f"{d['path']}")
        if d.get("in_progress"):
            click.echo(f"  NOT COMPLETE: extraction in progress or interrupted; {d['items_written']} of "
                       f"{d['items_planned']} items written, {d['items_skipped']} skipped (journal {d['journal']})")
            continue
        click.echo(f"  {'complete' if d['complete'] else 'NOT COMPLETE'}, {d['format']}, {d['modality']}, "
                   f"{d['items']} items ({d['skipped']} skipped), features {tuple(d['features_shape'])} {d['dtype']}, "
                   f"{_human(d['size_on_disk_bytes'])} on disk")
        click.echo(f"  splits {d['per_split']}  kinds {d['per_kind']}  sources {d['per_source']}")
        click.echo(f"  {d['concepts']} concepts, {d['items_per_concept']['min']}-{d['items_per_concept']['max']} "
                   "items each")
        if d["modality"] == "audio":
            f = d["frames_per_item"]
            click.echo(f"  {d['frames']} frames, {f['min']}/{f['mean']}/{f['max']} per item (min/mean/max), "
                       f"{d['speakers']} speakers")
        else:
            click.echo(f"  {d['positions']} positions per image")
        click.echo(f"  fingerprint: {d['fingerprint']}")
        for k, v in d["provenance"].items():
            click.echo(f"  {k}: {v}")


@cli.command(cls=Command, help="Check stores: every item's checksum, NaN/inf, counts, shapes, offsets, metadata, "
                               "missing or truncated chunks, completeness. Exit status 0 only when every store is "
                               "sound; one line per problem, naming the store and the items, otherwise. "
                               "STORES: " + STORES_HELP)
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=str))
@verbosity_options
@user_errors
def verify(stores: tuple[str, ...], progress: bool) -> None:
    bad = 0
    for path in progress_iter(stores, enabled=progress and len(stores) > 1, desc="verify", unit="store"):
        problems = verify_store(path)
        if problems:
            bad += 1
            for p in problems:
                click.echo(p)
        else:
            click.echo(f"{path}: ok")
    if bad:
        click.echo(f"{bad} of {len(stores)} store(s) have problems", err=True)
        sys.exit(1)


if __name__ == "__main__":
    cli(prog_name="python -m cache")
