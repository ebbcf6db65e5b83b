"""How good a gallery is before any retrieval: the upper bound a retrieval can reach."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from prm_bench.data.base import Dataset
from prm_bench.geometry.masks import mask_iou
from prm_bench.instances.proposals import Gallery


def best_overlaps(truth: np.ndarray, proposals: np.ndarray, top_n: int | None = None) -> np.ndarray:
    """For each ground-truth mask (G, H, W), its best IoU with the first `top_n` proposals."""
    proposals = proposals[:top_n] if top_n is not None else proposals
    if len(truth) == 0:
        return np.zeros(0)
    if len(proposals) == 0:
        return np.zeros(len(truth))
    return mask_iou(truth, proposals).max(axis=1)


def gallery_quality(
    dataset: Dataset,
    gallery: Gallery,
    ids: Sequence[str] | None = None,
    top_n: int | None = 100,
    thresholds: Sequence[float] = (0.5, 0.7),
) -> dict[str, float]:
    """Recall at IoU thresholds and average best overlap (ABO) of a gallery.

    Args:
        dataset: a split with instance ground truth.
        gallery: image id -> proposals (P, H, W) bool.
        ids: the images to use (default: all of the split).
        top_n: proposals considered per image (None: all).
        thresholds: IoU thresholds of the recall values.

    Returns:
        {"recall@0.5": ..., "recall@0.7": ..., "abo": ..., "instances": ...,
        "images": ..., "proposals_per_image": ..., "seconds_per_image": ...}
    """
    ids = list(ids if ids is not None else dataset.ids)
    overlaps, counts, seconds = [], [], 0.0
    for image_id in ids:
        truth = [instance.mask for instance in dataset.instances(image_id)]
        start = time.perf_counter()
        proposals = gallery(image_id)
        seconds += time.perf_counter() - start
        counts.append(min(len(proposals), top_n or len(proposals)))
        if truth:
            overlaps.append(best_overlaps(np.stack(truth), proposals, top_n))
    best = np.concatenate(overlaps) if overlaps else np.zeros(0)
    result = {
        f"recall@{t:g}": float((best >= t).mean()) if len(best) else float("nan")
        for t in thresholds
    }
    result["abo"] = float(best.mean()) if len(best) else float("nan")
    result["instances"] = float(len(best))
    result["images"] = float(len(ids))
    result["proposals_per_image"] = float(np.mean(counts)) if counts else 0.0
    result["seconds_per_image"] = seconds / max(len(ids), 1)
    return result
