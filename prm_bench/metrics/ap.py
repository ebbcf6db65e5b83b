"""Average precision of ranked hits, shared by every ranking metric, and the per-image
statistics that let a metric be recomputed on a bootstrap resample of the images.

A resample is a vector of image weights (how many times each image was drawn); every
statistic here takes a (B, N) matrix of such weights and returns B values, so a
thousand resamples cost a few matrix products. Weights of ones give the metric itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def nan_mean(values: np.ndarray | Sequence[float], axis: int | None = None) -> np.ndarray | float:
    """Mean ignoring NaN; NaN (without a warning) where every value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if np.ndim(mean) == 0 else mean


def weighted_average_precision(
    scores: Sequence[float] | np.ndarray,
    hits: Sequence[bool] | np.ndarray,
    n_positives: float | np.ndarray,
    weights: np.ndarray | None = None,
    use_07_metric: bool = False,
) -> np.ndarray:
    """AP of predictions ranked by descending score (stable on ties), each prediction
    counted `weights[b, i]` times: with integer weights this is the AP of the list in
    which every prediction is repeated that often.

    Args:
        scores: (D,) confidence of each prediction.
        hits: (D,) True for a true positive, False for a false positive.
        n_positives: ground-truth positives, a number or (B,); 0 gives NaN.
        weights: (B, D) counts of each prediction per resample; None is one row of ones.
        use_07_metric: 11-point interpolated AP (VOC 2007) instead of all-point.

    Returns:
        (B,) AP per row of weights.
    """
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.ones((1, len(scores))) if weights is None else np.asarray(weights, np.float64)
    positives = np.broadcast_to(np.asarray(n_positives, dtype=np.float64), weights.shape[:1])
    order = np.argsort(-scores, kind="stable")
    hits = np.asarray(hits, dtype=bool)[order]
    counted = weights[:, order]
    tp = np.cumsum(counted * hits, axis=1)
    fp = np.cumsum(counted * ~hits, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / positives[:, None]
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    if use_07_metric:
        points = [
            np.where(recall >= t, precision, -np.inf).max(axis=1, initial=-np.inf)
            for t in np.arange(0.0, 1.1, 0.1)
        ]
        ap = np.mean(np.maximum(np.stack(points, axis=1), 0.0), axis=1)
    else:
        rows = len(weights)
        mrec = np.concatenate([np.zeros((rows, 1)), recall, np.ones((rows, 1))], axis=1)
        mpre = np.concatenate([np.zeros((rows, 1)), precision, np.zeros((rows, 1))], axis=1)
        mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
        steps = mrec[:, 1:] != mrec[:, :-1]
        ap = np.sum(np.where(steps, (mrec[:, 1:] - mrec[:, :-1]) * mpre[:, 1:], 0.0), axis=1)
    return np.where(positives > 0, ap, np.nan)


def average_precision(
    scores: Sequence[float] | np.ndarray,
    hits: Sequence[bool] | np.ndarray,
    n_positives: int,
    use_07_metric: bool = False,
) -> float:
    """AP of predictions ranked by descending score (stable on ties); NaN without
    positives (the class is not scored)."""
    return float(weighted_average_precision(scores, hits, n_positives, None, use_07_metric)[0])


def class_key(label: int, class_names: list[str] | None) -> str:
    """The name a per-class value is reported under."""
    return class_names[label] if class_names is not None else str(label)


@dataclass(frozen=True)
class RankedHits:
    """The ranked predictions of a dataset, each tied to its image, and the positives of
    every image: enough to compute per-class AP on any resample of the images.

    Attributes:
        image: (D,) image index of each prediction.
        label: (D,) class of each prediction.
        score: (D,) confidence.
        hit: (D,) true positive or not.
        positives: (N, C) ground-truth positives per image and class.
    """

    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    hit: np.ndarray
    positives: np.ndarray

    @classmethod
    def build(
        cls,
        records: Sequence[tuple[int, int, float, bool]],
        positives: np.ndarray,
    ) -> RankedHits:
        """From (image, class, score, hit) tuples and the (N, C) positives."""
        table = np.array(records, dtype=np.float64).reshape(-1, 4)
        return cls(
            table[:, 0].astype(np.int64),
            table[:, 1].astype(np.int64),
            table[:, 2],
            table[:, 3].astype(bool),
            np.asarray(positives, dtype=np.int64),
        )

    def class_aps(self, weights: np.ndarray | None = None, use_07_metric: bool = False):
        """(B, C) AP per class for (B, N) image weights (None: the dataset itself)."""
        n_images, n_classes = self.positives.shape
        weights = np.ones((1, n_images)) if weights is None else np.asarray(weights, np.float64)
        positives = weights @ self.positives  # (B, C)
        aps = np.full((len(weights), n_classes), np.nan)
        for c in range(n_classes):
            chosen = self.label == c
            aps[:, c] = weighted_average_precision(
                self.score[chosen],
                self.hit[chosen],
                positives[:, c],
                weights[:, self.image[chosen]],
                use_07_metric,
            )
        return aps

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The statistics as named arrays (for an npz)."""
        fields = ("image", "label", "score", "hit", "positives")
        return {f"{prefix}/{name}": getattr(self, name) for name in fields}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> RankedHits:
        """Inverse of `to_arrays`."""
        fields = ("image", "label", "score", "hit", "positives")
        return cls(*(arrays[f"{prefix}/{name}"] for name in fields))
