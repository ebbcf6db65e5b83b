"""Datasets: the embedded `shapes` generator and the PASCAL VOC / COCO readers.

`DATASETS` holds one `DatasetSpec` per dataset kind: its opener
(`open(root, split, segmentation=False)` returns a reader with `ids`, `class_names`,
`image`, `labels` and `instances`) and, for a generated kind, its generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prm_bench.data.base import DataError, Dataset
from prm_bench.data.coco import CocoDataset
from prm_bench.data.shapes import ensure_shapes, shapes_pending
from prm_bench.data.voc import VocDataset
from prm_bench.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset kind, described as data.

    Attributes:
        name: the registry name (`data.name` in configs).
        open: `open(root, split, segmentation=False) -> Dataset`.
        description: one line for `prm-bench list`.
        generate: for a generated kind, `generate(root) -> bool` makes (or brings up to
            date) the dataset at root, True when it wrote anything; None for a read kind.
        pending: for a generated kind, `pending(root)`: what `generate` would write, in
            words, or None when the tree is up to date (a dry run says it, writing nothing).
    """

    name: str
    open: Callable[..., Dataset]
    description: str
    generate: Callable[[Path], bool] | None = None
    pending: Callable[[Path], str | None] | None = None

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        made = "generated on first use (data.generate)" if self.generate else "read"
        return made, self.description


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset",
    """Dataset kinds: each `DatasetSpec` opens a split as a reader with `ids`,
    `class_names`, `image`, `labels` and `instances`.""",
)


def open_voc(root: str | Path, split: str, segmentation: bool = False) -> Dataset:
    """PASCAL VOC 2012 (VOCdevkit layout); `split` is a split name or a list file."""
    return VocDataset(root, split, segmentation=segmentation)


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


def open_shapes(root: str | Path, split: str, segmentation: bool = False) -> Dataset:
    """The embedded shapes dataset at ROOT (see `generate_missing`)."""
    root = Path(root)
    if not (root / "shapes.json").is_file():
        raise DataError(
            f"no shapes dataset at {root} (no shapes.json): generate it with "
            f"`prm-bench data shapes {root}`, or set data.generate: true in the config"
        )
    return VocDataset(root, split, segmentation=segmentation)


for _spec in (
    DatasetSpec("voc", open_voc, "PASCAL VOC 2012 (VOCdevkit layout); a split name or list file"),
    DatasetSpec("coco", open_coco, "COCO: ROOT/annotations/instances_<split>.json, ROOT/<split>"),
    DatasetSpec(
        "shapes",
        open_shapes,
        "The embedded shapes dataset (VOC layout)",
        ensure_shapes,
        shapes_pending,
    ),
):
    DATASETS.add(_spec.name, _spec)


def generator_of(name: str) -> Callable[[Path], bool] | None:
    """How to generate the dataset kind `name`, or None when it is read, not made."""
    return DATASETS.get(name).generate


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
    return DATASETS.get(name).open(root, split, segmentation=segmentation)
