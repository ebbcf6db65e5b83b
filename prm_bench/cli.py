"""The `prm-bench` command line. Library modules print nothing; this module owns output."""

from __future__ import annotations

import inspect

import typer
from rich.console import Console
from rich.table import Table

from prm_bench import __version__
from prm_bench.backbones import BACKBONES
from prm_bench.peaks import STIMULATIONS
from prm_bench.registry import Registry

app = typer.Typer(
    name="prm-bench",
    help="Benchmark and ablation harness for Peak Response Maps (PRM, CVPR 2018).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()

FAMILIES: dict[str, Registry] = {"backbones": BACKBONES, "stimulations": STIMULATIONS}


def _describe(family: str, name: str) -> tuple[str, str]:
    entry = FAMILIES[family].get(name)
    if family == "backbones":
        return f"{entry.channels} ch, stride {entry.stride}", entry.description
    options = [
        f"{p.name}={p.default!r}"
        for p in inspect.signature(entry).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    doc = (entry.__doc__ or "").strip().splitlines()[0]
    return ", ".join(options) or "-", doc


@app.command("list")
def list_entries(
    family: str = typer.Argument(None, help=f"One of: {', '.join(FAMILIES)} (default: all)."),
    pattern: str = typer.Argument("*", help="fnmatch pattern over the names, e.g. 'resnet*'."),
) -> None:
    """List the entries of the registries (backbones, stimulations)."""
    if family is not None and family not in FAMILIES:
        console.print(
            f"[red]error:[/] unknown family {family!r} (choose from {', '.join(FAMILIES)})"
        )
        raise typer.Exit(2)
    for name in [family] if family else list(FAMILIES):
        table = Table(title=name, title_justify="left")
        for column in ("name", "properties", "description"):
            table.add_column(column)
        for entry in FAMILIES[name].names(pattern):
            table.add_row(entry, *_describe(name, entry))
        console.print(table)
    if family in (None, "backbones"):
        console.print("Any timm CNN is also available as [bold]timm:<name>[/].")


@app.command()
def version() -> None:
    """Print the prm-bench version."""
    console.print(__version__)


def main() -> None:
    """Entry point for `python -m prm_bench`."""
    app()
