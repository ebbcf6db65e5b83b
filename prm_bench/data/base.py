"""What every dataset reader provides, and the errors they raise on a bad layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DataError(ValueError):
    """A dataset that is missing or not laid out as expected; the message names the path."""


@dataclass
class Instance:
    """One ground-truth object instance.

    Attributes:
        label: class index (0-based, into the dataset's `class_names`).
        mask: (H, W) bool; void pixels belong to no instance.
        box: (x0, y0, x1, y1) in 0-based pixel coordinates, inclusive.
        difficult: VOC's "difficult" flag (False where the source has none).
    """

    label: int
    mask: np.ndarray
    box: tuple[int, int, int, int]
    difficult: bool = False


class Dataset(Protocol):
    """A split of a dataset: image ids, images, image-level labels, instances."""

    ids: list[str]
    class_names: list[str]

    def image(self, image_id: str) -> np.ndarray:
        """RGB image (H, W, 3) uint8."""
        ...

    def labels(self, image_id: str) -> np.ndarray:
        """Image-level labels (C,) float32 in {0, 1}."""
        ...

    def instances(self, image_id: str) -> list[Instance]:
        """Ground-truth instances of the image."""
        ...

    def void(self, image_id: str) -> np.ndarray | None:
        """(H, W) bool mask of pixels every metric ignores, or None where there are none."""
        ...

    def check(self, image_id: str) -> tuple[int, int]:
        """Read all of an image's files whole; its (height, width); DataError naming the
        file otherwise."""
        ...

    def files(self, image_id: str) -> dict[str, list[str]]:
        """The paths of one image's files by role: `images`, `labels`, `masks`
        (`prm_bench.data.fingerprint`); text, since a survey builds 400k of them."""
        ...

    def split_files(self) -> dict[str, list[str]]:
        """The paths of the files every image of the split shares, by role."""
        ...


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) box of a non-empty mask; (0, 0, -1, -1) if empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return (0, 0, -1, -1)
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def check_disjoint(
    train: Dataset, evaluation: Dataset, first: str = "training", second: str = "evaluation"
) -> None:
    """Refuse any image shared by two splits (by default: training on an evaluation image)."""
    overlap = sorted(set(train.ids) & set(evaluation.ids))
    if overlap:
        shown = ", ".join(overlap[:5]) + (" ..." if len(overlap) > 5 else "")
        raise DataError(
            f"{len(overlap)} {first} images are in the {second} split ({shown}); "
            f"use a {first} split that excludes the {second} images"
        )
