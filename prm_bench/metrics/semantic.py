"""Semantic segmentation from instances (DESIGN 3): mIoU over classes plus background.

Each class's prediction is the union of its predicted instance masks; where instances of
different classes overlap, the higher-scoring one wins. Void pixels are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prm_bench.metrics.ap import class_key, nan_mean


def label_map(instances: Sequence[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) labels: 0 background, c + 1 for class c; higher scores painted last."""
    labels = np.zeros(shape, dtype=np.int64)
    for instance in sorted(instances, key=lambda i: i.get("score", 0.0)):
        labels[np.asarray(instance["mask"], bool)] = instance["class"] + 1
    return labels


def confusions(
    predictions: Sequence[Sequence[dict[str, Any]]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    num_classes: int,
    void: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """(N, C + 1, C + 1) confusion matrix of each image (rows: truth, columns:
    prediction; 0 is background), void pixels left out."""
    size = num_classes + 1
    matrices = np.zeros((len(ground_truth), size, size), dtype=np.int64)
    for index, (preds, truth) in enumerate(zip(predictions, ground_truth, strict=True)):
        shape = next((np.asarray(i["mask"]).shape for i in (*truth, *preds)), None)
        ignore = void[index] if void is not None else None
        if shape is None:
            if ignore is None:
                continue
            shape = ignore.shape
        keep = ~np.asarray(ignore, bool) if ignore is not None else np.ones(shape, bool)
        predicted = label_map(preds, shape)[keep]
        actual = label_map(truth, shape)[keep]
        matrices[index] = np.bincount(actual * size + predicted, minlength=size * size).reshape(
            size, size
        )
    return matrices


def class_ious(confusion: np.ndarray) -> np.ndarray:
    """IoU per class (..., C + 1) of summed confusion matrices (..., C + 1, C + 1); NaN
    for a class absent from both prediction and truth."""
    confusion = np.asarray(confusion, dtype=np.float64)
    inter = np.diagonal(confusion, axis1=-2, axis2=-1)
    union = confusion.sum(-2) + confusion.sum(-1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def semantic_miou(
    predictions: Sequence[Sequence[dict[str, Any]]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    num_classes: int,
    void: Sequence[np.ndarray | None] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """mIoU of the semantic maps made from predicted and ground-truth instances.

    Args:
        predictions: per image a list of {"mask", "class", "score"}.
        ground_truth: per image a list of {"mask", "class"}.
        num_classes: C (background is added as a class).
        void: per image an (H, W) mask of pixels to ignore, or None.

    Returns:
        {"mIoU": ..., "IoU/background": ..., "IoU/<class>": ...}; a class absent from
        both predictions and ground truth is NaN and left out of the mean.
    """
    iou = class_ious(confusions(predictions, ground_truth, num_classes, void).sum(axis=0))
    result = {"mIoU": nan_mean(iou)}
    result["IoU/background"] = float(iou[0])
    for c in range(num_classes):
        result[f"IoU/{class_key(c, class_names)}"] = float(iou[c + 1])
    return result
