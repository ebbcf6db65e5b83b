"""`prm-bench data ...`: generate, inspect and split datasets, measure proposal galleries."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from prm_bench.cli.app import app, console, fail
from prm_bench.data import DATASETS, open_dataset
from prm_bench.data.base import DataError, Dataset
from prm_bench.data.shapes import CLASS_SHAPES, ShapesSpec, generate_shapes

data_app = typer.Typer(help="Generate and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("shapes")
def data_shapes(
    out_dir: Path = typer.Argument(..., help="Dataset root to create (VOC 2012 layout)."),
    seed: int = typer.Option(0, help="Base seed; the same arguments give identical files."),
    n_train: int = typer.Option(2000, help="Training images."),
    n_val: int = typer.Option(400, help="Validation images."),
    n_tune: int = typer.Option(
        None, help="Images of the held-out tuning split (default: a tenth of --n-train; 0: none)."
    ),
    size: int = typer.Option(128, help="Image side in pixels."),
    classes: int = typer.Option(5, help=f"Number of classes (1-{len(CLASS_SHAPES)})."),
    jobs: int = typer.Option(-1, help="Worker processes (-1: all cores)."),
) -> None:
    """Generate the embedded `shapes` dataset in the PASCAL VOC 2012 layout (+ COCO json).

    \f
    Takes eight parameters: each is a command-line option.
    """
    n_tune = n_train // 10 if n_tune is None else n_tune  # 200 for the default 2,000
    try:
        config = ShapesSpec(seed, n_train, n_val, size, classes, n_tune=n_tune)
        start = time.perf_counter()
        root = generate_shapes(out_dir, config, jobs=jobs)
    except (ValueError, FileExistsError) as err:
        fail(err)
    console.print(
        f"shapes dataset in {root}: {n_train} train + {n_val} val + {n_tune} tune images "
        f"of {size} px, "
        f"classes {', '.join(config.class_names)} ({time.perf_counter() - start:.1f} s)"
    )


DATASET_OPTION = typer.Option("voc", "--dataset", help="Dataset kind: voc, coco or shapes.")


@data_app.command("tune-split")
def data_tune_split(
    root: Path = typer.Argument(..., help="Dataset root."),
    source: str = typer.Option(
        "train", "--from", help="Split with instance masks the tuning images are drawn from."
    ),
    train: str = typer.Option(
        ..., help="The training split (name or list file) to remove the tuning images from."
    ),
    count: int = typer.Option(300, min=1, help="Tuning images."),
    seed: int = typer.Option(0, help="Seed of the draw."),
    out: Path = typer.Option(
        None, help="voc, shapes: folder for tune.txt and train-minus-tune.txt."
    ),
    kind: str = DATASET_OPTION,
) -> None:
    """Hold out a seeded subset of a split with masks as the tuning split (data.tune_split)
    and write the training split without it (data.train_split), so the classifier never
    sees a tuning image. VOC layouts get two list files in OUT; COCO gets
    annotations/instances_<train>@rest.json and instances_<from>@tune.json.

    \f
    Takes seven parameters: each is a command-line option.
    """
    try:
        if kind in ("voc", "shapes") and out is None:
            raise DataError(f"--dataset {kind} writes list files: give --out FOLDER")
        pool = _open(kind, root, source, True).ids
        if count >= len(pool):
            raise DataError(f"--count {count}: the {source} split has only {len(pool)} images")
        training = _open(kind, root, train, False)
    except DataError as err:
        fail(err)
    order = np.random.default_rng(seed).permutation(len(pool))
    held = sorted(pool[i] for i in order[:count])
    rest = [i for i in training.ids if i not in set(held)]
    if kind == "coco":
        source_set = _open(kind, root, source, False)
        written = [
            _coco_subset(source_set, held, root / "annotations" / f"instances_{source}@tune.json"),
            _coco_subset(training, rest, root / "annotations" / f"instances_{train}@rest.json"),
        ]
        splits = f"data.tune_split={source}@tune data.train_split={train}@rest"
    else:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "tune.txt", out / "train-minus-tune.txt"]
        written[0].write_text("".join(f"{i}\n" for i in held))
        written[1].write_text("".join(f"{i}\n" for i in rest))
        splits = f"data.tune_split={written[0]} data.train_split={written[1]}"
    console.print(
        f"{written[0]}: {len(held)} images of {source} (seed {seed}); {written[1]}: "
        f"{len(rest)} of {len(training.ids)} training images. Use --set {splits}"
    )


def _coco_subset(dataset: Dataset, ids: list[str], path: Path) -> Path:
    path.write_text(json.dumps(dataset.subset(ids)))
    return path


def _open(kind: str, root: Path, split: str, segmentation: bool) -> Dataset:
    if kind not in DATASETS:
        raise DataError(DATASETS.unknown_message(kind))
    return open_dataset(kind, root, split, segmentation=segmentation)


@data_app.command("info")
def data_info(
    root: Path = typer.Argument(..., help="Dataset root."),
    kind: str = DATASET_OPTION,
    split: str = typer.Option("val", help="Split name (VOC: or a split list file)."),
    segmentation: bool = typer.Option(True, help="Read the instance masks of the split."),
) -> None:
    """Check a dataset's layout and print its size, labels and instances per class."""
    try:
        dataset = _open(kind, root, split, segmentation)
        labels = np.zeros(len(dataset.class_names))
        counts = np.zeros(len(dataset.class_names), dtype=int)
        for image_id in dataset.ids:
            labels += dataset.labels(image_id)
            if segmentation:
                for instance in dataset.instances(image_id):
                    counts[instance.label] += 1
    except DataError as err:
        fail(err)
    table = Table(title=f"{root} {split} ({len(dataset.ids)} images)", title_justify="left")
    for column in ("class", "images", "instances"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, n_images, n_instances in zip(dataset.class_names, labels, counts, strict=True):
        table.add_row(name, str(int(n_images)), str(n_instances))
    console.print(table)


@data_app.command("proposals")
def data_proposals(
    root: Path = typer.Argument(..., help="Dataset root."),
    gallery: str = typer.Argument(..., help="Gallery name, e.g. embedded, mcg, gt, gt+mcg."),
    kind: str = DATASET_OPTION,
    split: str = typer.Option("val", help="Split with instance ground truth."),
    proposals: Path = typer.Option(
        None, help="Proposal folder (file galleries) or cache folder (embedded)."
    ),
    top_n: int = typer.Option(100, help="Proposals considered per image."),
    limit: int = typer.Option(None, help="Use only the first N images."),
    out: Path = typer.Option(None, help="JSON file for the figures (default: beside the data)."),
    cache: Path = typer.Option(
        None, help="Convert the top-N proposals to COCO RLE json here first (rle-json)."
    ),
    jobs: int = typer.Option(1, min=1, help="Worker processes converting to --cache."),
) -> None:
    """Recall at IoU 0.5 / 0.7 and ABO of a proposal gallery against the ground truth;
    with --cache, first convert it (e.g. a folder of MCG .mat files) into compact RLE
    files once, in parallel: `proposals.gallery: rle-json`, `proposals.root: CACHE`.

    \f
    Takes ten parameters: each is a command-line option.
    """
    from prm_bench.instances.proposals import GALLERIES, cache_gallery, open_gallery
    from prm_bench.instances.proposals.quality import gallery_quality

    try:
        dataset = _open(kind, root, split, True)
        if gallery not in GALLERIES:
            raise DataError(GALLERIES.unknown_message(gallery))
        ids = dataset.ids[:limit] if limit else dataset.ids
        if cache is not None:
            options = {"top_n": top_n, "jobs": jobs, "ids": ids}
            cache_gallery(gallery, proposals, dataset, cache, options)
            console.print(f"{len(ids)} images' top {top_n} proposals in {cache} (rle-json)")
            gallery, proposals = "rle-json", cache
        result = gallery_quality(dataset, open_gallery(gallery, proposals, dataset), ids, top_n)
    except DataError as err:
        fail(err)
    out = out or root / "proposal_quality" / f"{gallery}_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": str(root), "split": split, "gallery": gallery, "top_n": top_n, **result}
    out.write_text(json.dumps(record, indent=2) + "\n")
    table = Table(title=f"gallery {gallery} on {root} {split}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.3f}" if value % 1 else f"{int(value)}")
    console.print(table)
    console.print(f"saved {out}")
