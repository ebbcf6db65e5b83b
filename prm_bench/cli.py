"""The `prm-bench` command line. Library modules print nothing; this module owns output."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from prm_bench import __version__
from prm_bench.backbones import BACKBONES
from prm_bench.data.base import DataError, Dataset
from prm_bench.data.coco import CocoDataset
from prm_bench.data.shapes import CLASS_SHAPES, ShapesConfig, generate_shapes
from prm_bench.data.voc import VocDataset
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


data_app = typer.Typer(help="Generate and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("shapes")
def data_shapes(
    out_dir: Path = typer.Argument(..., help="Dataset root to create (VOC 2012 layout)."),
    seed: int = typer.Option(0, help="Base seed; the same arguments give identical files."),
    n_train: int = typer.Option(2000, help="Training images."),
    n_val: int = typer.Option(400, help="Validation images."),
    size: int = typer.Option(128, help="Image side in pixels."),
    classes: int = typer.Option(5, help=f"Number of classes (1-{len(CLASS_SHAPES)})."),
    jobs: int = typer.Option(-1, help="Worker processes (-1: all cores)."),
) -> None:
    """Generate the embedded `shapes` dataset in the PASCAL VOC 2012 layout (+ COCO json)."""
    try:
        config = ShapesConfig(seed, n_train, n_val, size, classes)
        start = time.perf_counter()
        root = generate_shapes(out_dir, config, jobs=jobs)
    except (ValueError, FileExistsError) as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from None
    console.print(
        f"shapes dataset in {root}: {n_train} train + {n_val} val images of {size} px, "
        f"classes {', '.join(config.class_names)} ({time.perf_counter() - start:.1f} s)"
    )


@data_app.command("info")
def data_info(
    root: Path = typer.Argument(..., help="VOC root, or a COCO instances json."),
    split: str = typer.Option("val", help="VOC split name or split list file."),
    images: Path = typer.Option(None, help="COCO image folder (with a json ROOT)."),
    segmentation: bool = typer.Option(True, help="VOC: read instance masks of the split."),
) -> None:
    """Check a dataset's layout and print its size, labels and instances per class."""
    try:
        if root.suffix == ".json":
            if images is None:
                raise DataError("a COCO json needs --images IMAGE_FOLDER")
            dataset: Dataset = CocoDataset(root, images)
        else:
            dataset = VocDataset(root, split, segmentation=segmentation)
        table = Table(title=f"{root} ({len(dataset.ids)} images)", title_justify="left")
        for column in ("class", "images", "instances"):
            table.add_column(column, justify="right" if column != "class" else "left")
        labels = np.zeros(len(dataset.class_names))
        counts = np.zeros(len(dataset.class_names), dtype=int)
        for image_id in dataset.ids:
            labels += dataset.labels(image_id)
            if segmentation or root.suffix == ".json":
                for instance in dataset.instances(image_id):
                    counts[instance.label] += 1
        for name, n_images, n_instances in zip(dataset.class_names, labels, counts, strict=True):
            table.add_row(name, str(int(n_images)), str(n_instances))
    except DataError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from None
    console.print(table)


@app.command()
def version() -> None:
    """Print the prm-bench version."""
    console.print(__version__)


def main() -> None:
    """Entry point for `python -m prm_bench`."""
    app()
