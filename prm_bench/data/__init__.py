"""Datasets: the embedded `shapes` generator and the PASCAL VOC / COCO readers.

`DATASETS` holds one opener per dataset kind: `opener(root, split, segmentation=False)`
returns a reader with `ids`, `class_names`, `image`, `labels` and `instances`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prm_bench.data.base import DataError, Dataset
from prm_bench.data.coco import CocoDataset
from prm_bench.data.shapes import ensure_shapes
from prm_bench.data.voc import VocDataset
from prm_bench.registry import Registry

DATASETS: Registry[Callable[..., Dataset]] = Registry(
    "dataset",
    """Dataset kinds: `opener(root, split, segmentation=False) -> Dataset`.""",
)


@DATASETS.register("voc")
def open_voc(root: str | Path, split: str, segmentation: bool = False) -> Dataset:
    """PASCAL VOC 2012 (VOCdevkit layout); `split` is a split name or a list file."""
    return VocDataset(root, split, segmentation=segmentation)


@DATASETS.register("coco")
def open_coco(root: str | Path, split: str, segmentation: bool = False) -> Dataset:
    """COCO: ROOT/annotations/instances_<split>.json with images in ROOT/<split>; a split
    `X@part` (from `prm-bench data tune-split`) holds images of ROOT/X."""
    root = Path(root)
    annotation = root / "annotations" / f"instances_{split}.json"
    folder = str(split).split("@")[0]
    images = root / folder if (root / folder).is_dir() else root / "JPEGImages"
    if not annotation.is_file():
        raise DataError(f"COCO annotation file {annotation} does not exist")
    return CocoDataset(annotation, images)


@DATASETS.register("shapes")
def open_shapes(root: str | Path, split: str, segmentation: bool = False) -> Dataset:
    """The embedded shapes dataset at ROOT (see `generate_missing`)."""
    root = Path(root)
    if not (root / "shapes.json").is_file():
        raise DataError(
            f"no shapes dataset at {root} (no shapes.json): generate it with "
            f"`prm-bench data shapes {root}`, or set data.generate: true in the config"
        )
    return VocDataset(root, split, segmentation=segmentation)


# a generated kind says so on its entry: `opener.generate(root) -> bool` makes (or brings
# up to date) the dataset at root, True when it wrote anything
open_shapes.generate = ensure_shapes  # type: ignore[attr-defined]


def generator_of(name: str) -> Callable[[Path], bool] | None:
    """How to generate the dataset kind `name`, or None when it is read, not made."""
    return getattr(DATASETS.get(name), "generate", None)


def generate_missing(name: str, root: str | Path) -> bool:
    """Generate the dataset `name` at `root` if it can be generated and is not there yet
    (or bring a tree from an older generator up to date); True when anything was written.
    Only called where a config asks for it (data.generate)."""
    generate = generator_of(name)
    if generate is None:
        made = [n for n in DATASETS.names() if generator_of(n) is not None]
        raise DataError(
            f"dataset {name!r} cannot be generated (generated kinds: {', '.join(made)})"
        )
    return generate(Path(root))


def open_dataset(name: str, root: str | Path, split: str, segmentation: bool = False) -> Dataset:
    """Open a split of a registered dataset kind."""
    return DATASETS.get(name)(root, split, segmentation=segmentation)
