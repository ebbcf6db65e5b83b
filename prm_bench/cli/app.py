"""The `prm-bench` typer app and what its commands share: the console, one-line errors
and the options common to `run` and `tune`. Library modules print nothing; the CLI owns
output."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from prm_bench import __version__

app = typer.Typer(
    name="prm-bench",
    help="Benchmark and ablation harness for Peak Response Maps (PRM, CVPR 2018).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # markdown: docstrings are wrapped to the terminal, not kept at their line breaks;
    # a docstring's "\f" ends its help (what follows is for readers of the code)
    rich_markup_mode="markdown",
)
console = Console()


class Device(str, Enum):
    """Where the stages run (`run.device`)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ExecutorName(str, Enum):
    """Where a level's tasks go (`run.executor`; `prm-bench list executors`)."""

    local = "local"
    dask = "dask"
    slurm = "slurm"


# options shared by `run` and `tune`
OVERRIDES_OPTION = typer.Option([], "--set", help="Override a key: section.key=value.")
DEVICE_OPTION = typer.Option(None, help="Where stages run (default: run.device).")
RUNS_DIR_OPTION = typer.Option(Path("runs"), help="Where run directories are made.")
EXECUTOR_OPTION = typer.Option(
    None, help="local (joblib processes), dask or slurm (submitit); default: run.executor."
)
SCHEDULER_OPTION = typer.Option(None, help="dask scheduler address, e.g. tcp://host:8786.")


def plain(value: object) -> str:
    """`value` as text the console prints as it is: a user's value such as `[voc-map]`
    would otherwise read as console markup and vanish."""
    return escape(str(value))


def fail(err: Exception) -> NoReturn:
    """Print a user mistake as one red line (never wrapped) and exit 2 (no traceback)."""
    console.print(f"[red]error:[/] {plain(err)}", soft_wrap=True)
    raise typer.Exit(2)


def _print_version(asked: bool) -> None:
    if asked:
        console.print(f"prm-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _width(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Benchmark and ablation harness for Peak Response Maps (PRM, CVPR 2018)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():  # read per command: the console was made at import
        console.width = int(columns)


def exit_interrupted() -> NoReturn:
    """Exit 130 now. Everything finished is on disk (atomic writes, manifest, log); a
    normal interpreter exit after a handled SIGINT sometimes ends in -2 instead (CPython
    re-raises an interrupt it saw at shutdown), which scripts would read as a crash."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


@app.command()
def version() -> None:
    """Print the prm-bench version."""
    console.print(__version__)
