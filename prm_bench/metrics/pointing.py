"""Pointwise localization (DESIGN 3): is the class response maximum on an object?

For each image and class the prediction is one point (the maximum of the class response
map, upsampled to image size) with the class score as confidence. Per class, images are
ranked by score; a point is a hit when the class is present and the point lies within a
ground-truth box of the class enlarged by a tolerance. The number of positives is the
number of images that contain the class. The tolerance is 18 px at VOC's scale (images of
about 500 px on the long side) and scales with the image's long side elsewhere: 4.6 px on
a 128-px image (`scaled_tolerance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prm_bench.geometry.maps import resize_maps
from prm_bench.metrics.ap import RankedHits, class_key, nan_mean


def max_points(class_response_maps: Any, image_size: tuple[int, int]) -> np.ndarray:
    """(C, 2) (y, x) image coordinates of each class map's maximum after bilinear
    upsampling to `image_size` (the first maximum in row-major order on a tie)."""
    maps = resize_maps(np.asarray(class_response_maps)[None], image_size)[0]
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return np.stack(np.divmod(flat, image_size[1]), axis=1)


def pointing_hits(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    tolerance: float | Sequence[float] = 18.0,
) -> RankedHits:
    """One ranked prediction per (image, class): its score and whether its point hits a
    box of the class grown by the image's tolerance; positives are the images that
    contain the class."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} images")
    tolerances = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (len(predictions),))
    n_classes = len(np.asarray(predictions[0]["scores"])) if len(predictions) else 0
    records = []
    positives = np.zeros((len(predictions), n_classes), dtype=np.int64)
    for image, (prediction, truth, grow) in enumerate(
        zip(predictions, ground_truth, tolerances, strict=True)
    ):
        points, scores = np.asarray(prediction["points"]), np.asarray(prediction["scores"])
        for c in range(n_classes):
            y, x = points[c]
            boxes = np.array([o["box"] for o in truth if o["class"] == c], dtype=float)
            boxes = boxes.reshape(-1, 4)
            positives[image, c] = int(len(boxes) > 0)
            inside = (
                (boxes[:, 0] - grow <= x)
                & (x <= boxes[:, 2] + grow)
                & (boxes[:, 1] - grow <= y)
                & (y <= boxes[:, 3] + grow)
            )
            records.append((image, c, float(scores[c]), bool(inside.any())))
    return RankedHits.build(records, positives)


def pointing_map(
    predictions: Sequence[dict[str, Any]],
    ground_truth: Sequence[Sequence[dict[str, Any]]],
    tolerance: float | Sequence[float] = 18.0,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """Pointwise localization mAP.

    Args:
        predictions: per image {"points": (C, 2) (y, x), "scores": (C,)}.
        ground_truth: per image a list of {"class": int, "box": (x0, y0, x1, y1)} with
            inclusive pixel boxes.
        tolerance: pixels a point may lie outside a box and still count; one number, or
            one per image (see `scaled_tolerance`).

    Returns:
        {"pointing_mAP": ..., "pointing_AP/<class>": ...}; classes no image contains are
        NaN and left out of the mean.
    """
    if not predictions:
        return {"pointing_mAP": float("nan")}
    aps = pointing_hits(predictions, ground_truth, tolerance).class_aps()[0]
    result = {f"pointing_AP/{class_key(c, class_names)}": float(ap) for c, ap in enumerate(aps)}
    result["pointing_mAP"] = nan_mean(aps)
    return result


def scaled_tolerance(
    tolerance: float, image_size: tuple[int, int], reference: float | None
) -> float:
    """The pointing tolerance in pixels of one image: `tolerance` pixels at the
    `reference` scale (VOC: images of about 500 px on the long side), scaled by the
    image's long side; `reference=None` keeps `tolerance` in pixels whatever the size."""
    if reference is None:
        return float(tolerance)
    return float(tolerance) * max(image_size) / float(reference)
