"""PRM quality (DESIGN 3): how much of a peak response map falls on one object.

For each PRM R of class c: score = max over the image's class-c instances G of
sum(R * G) / sum(R) (0 if there is none); a PRM is correct when its score is above 0.5.
Values are split by the number of objects in the image: 1, 2-5, 6+.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BUCKETS = (("1", 1, 1), ("2-5", 2, 5), ("6+", 6, 10**9))


def prm_scores(
    prms: np.ndarray, classes: np.ndarray, truth: Sequence[dict[str, Any]]
) -> np.ndarray:
    """Score of each PRM (K, H, W) of classes (K,) against an image's instances."""
    scores = np.zeros(len(prms))
    if not truth or not len(prms):
        return scores
    masks = np.stack([np.asarray(i["mask"], bool) for i in truth]).reshape(len(truth), -1)
    labels = np.array([i["class"] for i in truth])
    flat = np.asarray(prms, dtype=np.float64).reshape(len(prms), -1)
    inside = flat @ masks.T.astype(np.float64)  # (K, G)
    total = flat.sum(axis=1, keepdims=True)
    share = np.where(total > 0, inside / np.where(total > 0, total, 1), 0.0)
    share[classes[:, None] != labels[None, :]] = 0.0
    return share.max(axis=1)


def prm_quality(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    threshold: float = 0.5,
) -> dict[str, float]:
    """Share of correct PRMs and mean PRM score, overall and by objects per image.

    Args:
        predictions: per image {"prms": (K, H, W), "classes": (K,)}.
        ground_truth: per image a list of {"mask", "class"}.

    Returns:
        {"prm_correct": ..., "prm_score": ..., "prm_correct/1": ..., "prm_score/1": ...,
        "prm_count/1": ..., and the same for 2-5 and 6+}.
    """
    scores, objects = [], []
    for prediction, truth in zip(predictions, ground_truth, strict=True):
        value = prm_scores(np.asarray(prediction["prms"]), np.asarray(prediction["classes"]), truth)
        scores.append(value)
        objects.append(np.full(len(value), len(truth)))
    score = np.concatenate(scores) if scores else np.zeros(0)
    count = np.concatenate(objects) if objects else np.zeros(0)

    def summary(selected: np.ndarray) -> tuple[float, float]:
        if not selected.any():
            return float("nan"), float("nan")
        return float((score[selected] > threshold).mean()), float(score[selected].mean())

    result: dict[str, float] = {}
    result["prm_correct"], result["prm_score"] = summary(np.ones(len(score), dtype=bool))
    for name, low, high in BUCKETS:
        selected = (count >= low) & (count <= high)
        result[f"prm_correct/{name}"], result[f"prm_score/{name}"] = summary(selected)
        result[f"prm_count/{name}"] = float(selected.sum())
    return result
