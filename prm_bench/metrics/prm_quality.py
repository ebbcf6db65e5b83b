"""PRM quality (DESIGN 3): how much of a peak response map falls on one object.

For each PRM R of class c: score = max over the image's class-c instances G of
sum(R * G) / sum(R), both sums over non-void pixels (0 if the image has no instance of
class c); a PRM is correct when its score is above 0.5. Values are split by the number
of objects in the image: 1, 2-5, 6+. PRMs of classes absent from the image count as
misses, as in the paper, and are also reported on their own (`prm_absent`,
`prm_correct_present`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BUCKETS = (("1", 1, 1), ("2-5", 2, 5), ("6+", 6, 10**9))


def prm_scores(
    prms: np.ndarray,
    classes: np.ndarray,
    truth: Sequence[dict[str, Any]],
    void: np.ndarray | None = None,
) -> np.ndarray:
    """Score of each PRM (K, H, W) of classes (K,) against an image's instances, with
    the `void` pixels (H, W) left out of both sums."""
    scores = np.zeros(len(prms))
    if not truth or not len(prms):
        return scores
    flat = np.asarray(prms, dtype=np.float64).reshape(len(prms), -1)
    if void is not None:
        flat = flat * ~np.asarray(void, bool).reshape(1, -1)
    masks = np.stack([np.asarray(i["mask"], bool) for i in truth]).reshape(len(truth), -1)
    labels = np.array([i["class"] for i in truth])
    inside = flat @ masks.T.astype(np.float64)  # (K, G)
    total = flat.sum(axis=1, keepdims=True)
    share = np.where(total > 0, inside / np.where(total > 0, total, 1), 0.0)
    share[np.asarray(classes)[:, None] != labels[None, :]] = 0.0
    return share.max(axis=1)


def prm_records(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    void: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per PRM: its image index, score, objects in its image, and whether its class is
    present in the image."""
    image, scores, objects, present = [], [], [], []
    for index, (prediction, truth) in enumerate(zip(predictions, ground_truth, strict=True)):
        classes = np.asarray(prediction["classes"])
        ignore = void[index] if void is not None else None
        value = prm_scores(np.asarray(prediction["prms"]), classes, truth, ignore)
        labels = {i["class"] for i in truth}
        image.append(np.full(len(value), index))
        scores.append(value)
        objects.append(np.full(len(value), len(truth)))
        present.append(np.array([int(c) in labels for c in classes], dtype=bool))
    if not scores:
        return np.zeros(0, int), np.zeros(0), np.zeros(0, int), np.zeros(0, bool)
    return tuple(np.concatenate(v) for v in (image, scores, objects, present))


def prm_quality(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    threshold: float = 0.5,
    void: Sequence[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Share of correct PRMs and mean PRM score, overall and by objects per image.

    Args:
        predictions: per image {"prms": (K, H, W), "classes": (K,)}.
        ground_truth: per image a list of {"mask", "class"}.
        threshold: a PRM is correct when its score is above this.
        void: per image an (H, W) mask of pixels left out of both sums, or None.

    Returns:
        {"prm_correct": ..., "prm_score": ..., "prm_correct_present": ... (PRMs of
        classes in the image only), "prm_absent": ... (share of PRMs whose class is
        absent), "prm_correct/1": ..., "prm_score/1": ..., "prm_count/1": ..., and the
        same for 2-5 and 6+}.
    """
    _, score, count, present = prm_records(predictions, ground_truth, void)

    def summary(selected: np.ndarray) -> tuple[float, float]:
        if not selected.any():
            return float("nan"), float("nan")
        return float((score[selected] > threshold).mean()), float(score[selected].mean())

    result: dict[str, float] = {}
    result["prm_correct"], result["prm_score"] = summary(np.ones(len(score), dtype=bool))
    result["prm_correct_present"], result["prm_score_present"] = summary(present)
    result["prm_absent"] = float((~present).mean()) if len(present) else float("nan")
    for name, low, high in BUCKETS:
        selected = (count >= low) & (count <= high)
        result[f"prm_correct/{name}"], result[f"prm_score/{name}"] = summary(selected)
        result[f"prm_count/{name}"] = float(selected.sum())
    return result


def prm_statistics(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    threshold: float = 0.5,
    void: Sequence[np.ndarray | None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-image numerators and denominators of `prm_correct` and `prm_correct_present`
    (for the bootstrap, `prm_bench.metrics.bootstrap`)."""
    image, score, _, present = prm_records(predictions, ground_truth, void)
    n = len(ground_truth)
    correct = score > threshold
    return {
        "prm_correct/num": np.bincount(image, correct, minlength=n),
        "prm_correct/den": np.bincount(image, minlength=n).astype(np.float64),
        "prm_correct_present/num": np.bincount(image, correct & present, minlength=n),
        "prm_correct_present/den": np.bincount(image, present, minlength=n).astype(np.float64),
    }
