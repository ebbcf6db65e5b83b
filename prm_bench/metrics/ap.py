"""Average precision of a ranked list of hits, shared by every ranking metric."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_precision(
    scores: Sequence[float] | np.ndarray,
    hits: Sequence[bool] | np.ndarray,
    n_positives: int,
    use_07_metric: bool = False,
) -> float:
    """AP of predictions ranked by descending score (stable on ties).

    Args:
        scores: (N,) confidence of each prediction.
        hits: (N,) True for a true positive, False for a false positive.
        n_positives: ground-truth positives; 0 gives NaN (the class is not scored).
        use_07_metric: 11-point interpolated AP (VOC 2007) instead of all-point.
    """
    if n_positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(hits, dtype=bool)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / n_positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    if use_07_metric:
        points = [
            precision[recall >= t].max() if (recall >= t).any() else 0.0
            for t in np.arange(0.0, 1.1, 0.1)
        ]
        return float(np.mean(points))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def class_key(label: int, class_names: list[str] | None) -> str:
    """The name a per-class value is reported under."""
    return class_names[label] if class_names is not None else str(label)
