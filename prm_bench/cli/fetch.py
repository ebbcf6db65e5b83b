"""`prm-bench data fetch` and `prm-bench data prepare`: the paper's inputs in two commands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from prm_bench.cli.app import console, fail
from prm_bench.cli.data import data_app
from prm_bench.data.base import DataError
from prm_bench.data.fetch import FetchError, FetchOptions, fetch_archive, in_place, needed_bytes
from prm_bench.data.prepare import prepare_voc2012
from prm_bench.data.sources import SOURCES

ROOT_OPTION = typer.Option(Path("data"), "--root", help="The data root (configs read from here).")


def _sources_table() -> Table:
    table = Table(title="data sources (prm-bench data fetch NAME)", title_justify="left")
    for column in ("name", "file", "size", "checksum", "unpacks to"):
        table.add_column(column)
    for name in SOURCES.names():
        for archive in SOURCES.get(name).archives:
            size = f"{archive.size:,} B" if archive.size else "unpublished"
            table.add_row(name, archive.filename, size, archive.checksum_kind, archive.provides)
    return table


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(None, help="Sources, e.g. voc2012 sbd mcg-voc2012."),
    root: Path = ROOT_OPTION,
    mirror: str = typer.Option(None, help="A base URL replacing every file's own."),
    from_dir: Path = typer.Option(None, "--from", help="A folder holding the archives."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be fetched."),
    keep: bool = typer.Option(False, help="Keep the archives after unpacking them."),
    show: bool = typer.Option(False, "--list", help="List every source and stop."),
) -> None:
    """Download, verify (size, MD5 or SHA-256) and unpack the paper's inputs under --root;
    interrupted downloads resume, and a second fetch only checks what is in place.

    \f
    Takes seven parameters: each is a command-line option."""
    if show or not names:
        console.print(_sources_table())
        return
    try:
        sources = [SOURCES.get(n) for n in names]
    except ValueError as err:
        fail(err)
    options = FetchOptions(mirror=mirror, from_dir=from_dir, keep=keep)
    archives = [a for s in sources for a in s.archives]
    if dry_run:
        for archive in archives:
            needed = needed_bytes(root, archive, options)
            state = f"needs {needed / 1e9:.2f} GB" if needed else "size unpublished"
            state = "in place" if in_place(root, archive) else state
            console.print(f"{archive.filename}: {state} -> {root / archive.provides}")
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=console,
    ) as progress:  # fmt: skip
        bars: dict[str, TaskID] = {}

        def advance(name: str, done: int, total: int | None) -> None:
            if name not in bars:
                bars[name] = progress.add_task(name, total=total)
            progress.update(bars[name], completed=done, total=total)

        options = FetchOptions(mirror, from_dir, keep, advance, progress.console.print)
        for archive in archives:
            try:
                state = fetch_archive(root, archive, options)
            except FetchError as err:
                progress.stop()
                fail(err)
            progress.console.print(f"{archive.filename}: {state} -> {root / archive.provides}")


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(..., help="voc2012: build train_aug from VOC and SBD."),
    root: Path = ROOT_OPTION,
) -> None:
    """Build what the configs read from fetched sources: for voc2012, train_aug.txt
    ((SBD train | SBD val | VOC seg train) - VOC seg val), checked image by image."""
    if name != "voc2012":
        fail(DataError(f"data prepare knows voc2012, not {name!r}"))
    try:
        done = prepare_voc2012(root)
    except DataError as err:
        fail(err)
    counts = "the published counts" if done.real_size else "not the published lists (a subset?)"
    console.print(
        f"{done.path}: {done.images} images ({done.voc_train} VOC train, none of the "
        f"{done.voc_val} val, {done.sbd} SBD); {counts}; "
        + ("written" if done.written else "already up to date")
    )
