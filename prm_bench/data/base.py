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


class JoinedSplits:
    """Two disjoint splits of one dataset read as one (the `train-on-eval` leak of the
    reproduction-gap study: the training images and the evaluation images)."""

    def __init__(self, first: Dataset, second: Dataset) -> None:
        check_disjoint(first, second, "first", "second")
        if list(first.class_names) != list(second.class_names):
            raise DataError("joined splits must have the same classes")
        self.parts, self.class_names = (first, second), first.class_names
        self.ids = [*first.ids, *second.ids]
        self._of = {i: first for i in first.ids} | {i: second for i in second.ids}

    def image(self, image_id: str) -> np.ndarray:
        """The image, from the split that holds it."""
        return self._of[image_id].image(image_id)

    def labels(self, image_id: str) -> np.ndarray:
        """The image-level labels, from the split that holds the image."""
        return self._of[image_id].labels(image_id)

    def instances(self, image_id: str) -> list[Instance]:
        """The instances, from the split that holds the image."""
        return self._of[image_id].instances(image_id)

    def void(self, image_id: str) -> np.ndarray | None:
        """The void mask, from the split that holds the image."""
        return self._of[image_id].void(image_id)

    def check(self, image_id: str) -> tuple[int, int]:
        """The image's check, by the split that holds it."""
        return self._of[image_id].check(image_id)

    def files(self, image_id: str) -> dict[str, list[str]]:
        """The image's files, from the split that holds it."""
        return self._of[image_id].files(image_id)

    def split_files(self) -> dict[str, list[str]]:
        """The shared files of both splits, by role."""
        joined: dict[str, list[str]] = {}
        for part in self.parts:
            for role, paths in part.split_files().items():
                bucket = joined.setdefault(role, [])
                bucket += [p for p in paths if p not in bucket]
        return joined
