"""Pointwise localization (DESIGN 3): is the class response maximum on an object?

For each image and class the prediction is one point (the maximum of the class response
map, upsampled to image size) with the class score as confidence. Per class, images are
ranked by score; a point is a hit when the class is present and the point lies within a
ground-truth box of the class enlarged by `tolerance` pixels. The number of positives is
the number of images that contain the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prm_bench.metrics.ap import average_precision, class_key


def max_points(
    class_response_maps: np.ndarray | torch.Tensor, image_size: tuple[int, int]
) -> np.ndarray:
    """(C, 2) (y, x) image coordinates of each class map's maximum after bilinear
    upsampling to `image_size` (the first maximum in row-major order on a tie)."""
    maps = torch.as_tensor(np.asarray(class_response_maps, dtype=np.float32))[None]
    maps = F.interpolate(maps, size=image_size, mode="bilinear", align_corners=False)[0]
    flat = maps.flatten(1).argmax(dim=1).numpy()
    return np.stack(np.divmod(flat, image_size[1]), axis=1)


def pointing_map(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    tolerance: float = 18.0,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """Pointwise localization mAP.

    Args:
        predictions: per image {"points": (C, 2) (y, x), "scores": (C,)}.
        ground_truth: per image a list of {"class": int, "box": (x0, y0, x1, y1)} with
            inclusive pixel boxes.
        tolerance: pixels a point may lie outside a box and still count.

    Returns:
        {"pointing_mAP": ..., "pointing_AP/<class>": ...}; classes no image contains are
        NaN and left out of the mean.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} images")
    if not predictions:
        return {"pointing_mAP": float("nan")}
    n_classes = len(np.asarray(predictions[0]["scores"]))
    result: dict[str, float] = {}
    aps = []
    for c in range(n_classes):
        scores, hits, positives = [], [], 0
        for prediction, truth in zip(predictions, ground_truth, strict=True):
            y, x = np.asarray(prediction["points"])[c]
            boxes = np.array([o["box"] for o in truth if o["class"] == c], dtype=float).reshape(
                -1, 4
            )
            positives += int(len(boxes) > 0)
            inside = (
                (boxes[:, 0] - tolerance <= x)
                & (x <= boxes[:, 2] + tolerance)
                & (boxes[:, 1] - tolerance <= y)
                & (y <= boxes[:, 3] + tolerance)
            )
            scores.append(float(np.asarray(prediction["scores"])[c]))
            hits.append(bool(inside.any()))
        ap = average_precision(scores, hits, positives)
        aps.append(ap)
        result[f"pointing_AP/{class_key(c, class_names)}"] = ap
    result["pointing_mAP"] = float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else float("nan")
    return result
