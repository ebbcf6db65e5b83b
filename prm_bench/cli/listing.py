"""`prm-bench list`: the entries of every registry, each described by itself."""

from __future__ import annotations

import typer
from rich.table import Table

from prm_bench.cli.app import app, console, plain
from prm_bench.registry import Registry

NAMES = (
    "backbones", "stimulations", "terms", "galleries", "baselines", "methods", "metrics",
    "datasets", "executors", "sources",
)  # fmt: skip


def families() -> dict[str, Registry]:
    """The registries by family name (imported when listed: the CLI starts without torch)."""
    from prm_bench.data import DATASETS
    from prm_bench.data.sources import SOURCES
    from prm_bench.instances.baselines import BASELINES
    from prm_bench.instances.methods import METHODS
    from prm_bench.instances.proposals import GALLERIES
    from prm_bench.instances.retrieval_options import TERMS
    from prm_bench.metrics import METRICS
    from prm_bench.model.catalogue import BACKBONES, STIMULATIONS
    from prm_bench.orchestrate.executors import EXECUTORS

    registries = (BACKBONES, STIMULATIONS, TERMS, GALLERIES, BASELINES, METHODS, METRICS,
                  DATASETS, EXECUTORS, SOURCES)  # fmt: skip
    return dict(zip(NAMES, registries, strict=True))


@app.command("list")
def list_entries(
    family: str = typer.Argument(None, help=f"One of: {', '.join(NAMES)} (default: all)."),
    pattern: str = typer.Argument("*", help="fnmatch pattern over the names, e.g. 'resnet*'."),
) -> None:
    """List the entries of the registries (backbones, stimulations, terms, galleries,
    baselines, methods, metrics, datasets, executors, sources)."""
    if family is not None and family not in NAMES:
        console.print(f"[red]error:[/] unknown family {family!r} (choose from {', '.join(NAMES)})")
        raise typer.Exit(2)
    registries = families()
    for name in [family] if family else list(NAMES):
        table = Table(title=name, title_justify="left")
        for column in ("name", "properties", "description"):
            table.add_column(column)
        for entry in registries[name].names(pattern):
            table.add_row(entry, *map(plain, registries[name].describe(entry)))
        console.print(table)
    if family in (None, "backbones"):
        console.print("Any timm CNN is also available as [bold]timm:<name>[/].")
    if family in (None, "galleries"):
        console.print("Any gallery X is also available as [bold]gt+X[/] (ground truth first).")
