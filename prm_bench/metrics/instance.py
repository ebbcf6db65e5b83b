"""Instance segmentation metrics: mAP^r VOC style and COCO style, and ABO (DESIGN 3).

Inputs, one entry per image: `predictions[i]` a list of {"mask": (H, W) bool, "class":
int, "score": float}; `ground_truth[i]` a list of {"mask", "class"} (optionally
"difficult": True, which VOC style ignores as chainercv does and COCO style drops).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from prm_bench.geometry.masks import encode_rle, mask_iou, rle_box
from prm_bench.metrics.ap import RankedHits, class_key, nan_mean

Instances = Sequence[Sequence[dict[str, Any]]]


def _stack(instances: Sequence[dict[str, Any]], shape: tuple[int, ...]) -> np.ndarray:
    if not instances:
        return np.zeros((0, *shape), dtype=bool)
    return np.stack([np.asarray(i["mask"], dtype=bool) for i in instances])


def _image_shape(predictions: Sequence[dict], truth: Sequence[dict]) -> tuple[int, ...] | None:
    for instance in (*truth, *predictions):
        return np.asarray(instance["mask"]).shape
    return None


def _classes(predictions: Instances, ground_truth: Instances, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    labels = [i["class"] for image in (*predictions, *ground_truth) for i in image]
    return max(labels, default=-1) + 1


def voc_matches(
    predictions: Instances,
    ground_truth: Instances,
    iou_thresholds: Sequence[float],
    num_classes: int,
) -> list[RankedHits]:
    """Per IoU threshold, every prediction with its image, class, score and hit flag, and
    the positives of every image, by the VOC / FCIS / chainercv matching rule (see
    `voc_map`). Predictions that match a difficult instance are left out."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction lists for {len(ground_truth)} images")
    thresholds = list(iou_thresholds)
    records: list[list[tuple[int, int, float, bool]]] = [[] for _ in thresholds]
    positives = np.zeros((len(ground_truth), num_classes), dtype=np.int64)
    for image, (preds, truth) in enumerate(zip(predictions, ground_truth, strict=True)):
        shape = _image_shape(preds, truth)
        for c in range(num_classes):
            p = sorted((i for i in preds if i["class"] == c), key=lambda i: -i["score"])
            g = [i for i in truth if i["class"] == c]
            difficult = np.array([bool(i.get("difficult", False)) for i in g], dtype=bool)
            positives[image, c] = int((~difficult).sum())
            if not p:
                continue
            overlaps = mask_iou(_stack(p, shape), _stack(g, shape)) if g else np.zeros((len(p), 0))
            for t, threshold in enumerate(thresholds):
                taken = np.zeros(len(g), dtype=bool)
                for row, instance in zip(overlaps, p, strict=True):
                    best = int(row.argmax()) if len(row) else -1
                    if best >= 0 and row[best] >= threshold and difficult[best]:
                        continue  # matched a difficult instance: neither TP nor FP
                    hit = best >= 0 and row[best] >= threshold and not taken[best]
                    if hit:
                        taken[best] = True
                    records[t].append((image, c, float(instance["score"]), hit))
    return [RankedHits.build(r, positives) for r in records]


def voc_map(
    predictions: Instances,
    ground_truth: Instances,
    iou_thresholds: Sequence[float] = (0.25, 0.5, 0.75),
    use_07_metric: bool = False,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """mAP^r with the VOC / FCIS / chainercv matching rule.

    Per class, predictions are ranked by score over the dataset; in its image a prediction
    matches the same-class ground truth of highest IoU (the first on a tie): a true
    positive if that IoU >= t and the instance is not taken yet, else a false positive.
    Classes without ground truth are NaN and left out of the mean.

    Returns:
        {"mAP@t": ..., "AP@t/<class>": ...} for every threshold t.

    Takes six parameters: predictions and ground truth, the IoU thresholds, the AP
    variant, and the classes (count and names).
    """
    n_classes = _classes(predictions, ground_truth, num_classes)
    thresholds = list(iou_thresholds)
    matches = voc_matches(predictions, ground_truth, thresholds, n_classes)
    result: dict[str, float] = {}
    for threshold, hits in zip(thresholds, matches, strict=True):
        aps = hits.class_aps(use_07_metric=use_07_metric)[0]
        result[f"mAP@{threshold:g}"] = nan_mean(aps)
        for c, ap in enumerate(aps):
            result[f"AP@{threshold:g}/{class_key(c, class_names)}"] = float(ap)
    return result


def voc_pr_curve(
    predictions: Instances,
    ground_truth: Instances,
    iou_threshold: float = 0.5,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of all classes' predictions ranked together, each matched to its
    own class by the VOC rule; for plotting."""
    n_classes = _classes(predictions, ground_truth, num_classes)
    (hits,) = voc_matches(predictions, ground_truth, [iou_threshold], n_classes)
    order = np.lexsort((np.arange(len(hits.score)), hits.label, -hits.score))
    tp = np.cumsum(hits.hit[order])
    precision = tp / np.arange(1, len(order) + 1)
    return tp / max(int(hits.positives.sum()), 1), precision


def coco_map(
    predictions: Instances,
    ground_truth: Instances,
    iou_thresholds: Sequence[float] = (0.25, 0.5, 0.75),
    max_detections: int = 100,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """mAP^r through pycocotools `COCOeval(iouType="segm")` at the given IoU thresholds.

    Per-class AP is read from `eval["precision"]` at area "all" and `max_detections`.

    Returns:
        {"coco_mAP@t": ..., "coco_AP@t/<class>": ...}.

    Takes six parameters: predictions and ground truth, the IoU thresholds, the
    detection limit, and the classes (count and names).
    """
    n_classes = _classes(predictions, ground_truth, num_classes)
    thresholds = list(iou_thresholds)
    images, annotations, results = _coco_records(predictions, ground_truth)
    per_class = np.full((len(thresholds), n_classes), np.nan)
    counts = np.bincount([a["category_id"] - 1 for a in annotations], minlength=n_classes)
    per_class[:, counts[:n_classes] > 0] = 0.0
    if images and annotations and results:
        precision, categories = _coco_precision(
            images, annotations, results, thresholds, n_classes, max_detections
        )
        for t in range(len(thresholds)):
            for k, category in enumerate(categories):
                values = precision[t, :, k]
                if counts[category - 1] > 0:
                    scored = values[values > -1]
                    per_class[t, category - 1] = scored.mean() if len(scored) else 0.0
    result: dict[str, float] = {}
    for t, threshold in enumerate(thresholds):
        result[f"coco_mAP@{threshold:g}"] = nan_mean(per_class[t])
        for c in range(n_classes):
            result[f"coco_AP@{threshold:g}/{class_key(c, class_names)}"] = float(per_class[t, c])
    return result


def _coco_records(
    predictions: Instances, ground_truth: Instances
) -> tuple[list[dict], list[dict], list[dict]]:
    """COCO images, ground-truth annotations (difficult ones dropped) and results."""
    images, annotations, results = [], [], []
    for number, (preds, truth) in enumerate(zip(predictions, ground_truth, strict=True), 1):
        shape = _image_shape(preds, truth)
        if shape is None:
            continue
        images.append({"id": number, "height": shape[0], "width": shape[1]})
        for instance in truth:
            if instance.get("difficult", False):
                continue
            rle = encode_rle(np.asarray(instance["mask"], bool))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number,
                    "category_id": instance["class"] + 1,
                    "segmentation": rle,
                    "area": float(np.asarray(instance["mask"]).sum()),
                    "bbox": rle_box(rle),
                    "iscrowd": 0,
                }
            )
        for instance in preds:
            results.append(
                {
                    "image_id": number,
                    "category_id": instance["class"] + 1,
                    "segmentation": encode_rle(np.asarray(instance["mask"], bool)),
                    "score": float(instance["score"]),
                }
            )
    return images, annotations, results


def _coco_precision(
    images: list[dict],
    annotations: list[dict],
    results: list[dict],
    thresholds: list[float],
    n_classes: int,
    max_detections: int,
) -> tuple[np.ndarray, list[int]]:
    """COCOeval's precision (T, R, K) at area "all" and the last maxDets, and its K ids.

    Takes six parameters: COCO's images, annotations and results, and COCOeval's
    thresholds, class count and detection limit.
    """
    categories = [{"id": c + 1, "name": str(c)} for c in range(n_classes)]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        truth_api = COCO()
        truth_api.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth_api.createIndex()
        evaluator = COCOeval(truth_api, truth_api.loadRes(results), iouType="segm")
        evaluator.params.iouThrs = np.asarray(thresholds, dtype=np.float64)
        evaluator.params.maxDets = [max_detections]
        evaluator.params.areaRng = [[0.0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1], list(evaluator.params.catIds)


def best_overlaps(
    predictions: Instances, ground_truth: Instances, num_classes: int
) -> list[tuple[int, int, float]]:
    """(image, class, best IoU) of every ground-truth instance: its best IoU with the
    predictions of its class in its image (0 if none)."""
    best = []
    for image, (preds, truth) in enumerate(zip(predictions, ground_truth, strict=True)):
        shape = _image_shape(preds, truth)
        for c in range(num_classes):
            g = [i for i in truth if i["class"] == c]
            if not g:
                continue
            p = [i for i in preds if i["class"] == c]
            overlaps = mask_iou(_stack(g, shape), _stack(p, shape)) if p else np.zeros((len(g), 1))
            best += [(image, c, float(v)) for v in overlaps.max(axis=1)]
    return best


def abo(
    predictions: Instances,
    ground_truth: Instances,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """Average best overlap: for each ground-truth instance, its best IoU with the
    predictions of its class in its image (0 if none).

    Returns:
        {"abo": mean over instances, "abo_class_mean": mean over classes of the
        per-class means, "abo/<class>": ...}.
    """
    n_classes = _classes(predictions, ground_truth, num_classes)
    best = best_overlaps(predictions, ground_truth, n_classes)
    values = np.array([v for _, _, v in best])
    labels = np.array([c for _, c, _ in best], dtype=np.int64)
    per_class = [
        float(values[labels == c].mean()) if (labels == c).any() else float("nan")
        for c in range(n_classes)
    ]
    result = {
        "abo": float(values.mean()) if len(values) else float("nan"),
        "abo_class_mean": nan_mean(per_class) if len(values) else float("nan"),
    }
    for c, value in enumerate(per_class):
        result[f"abo/{class_key(c, class_names)}"] = value
    return result


def voc_statistics(
    predictions: Instances,
    ground_truth: Instances,
    iou_thresholds: Sequence[float],
    use_07_metric: bool,
    num_classes: int,
) -> dict[str, np.ndarray]:
    """Per-image ranked hits of mAP@t, from which `prm_bench.metrics.bootstrap`
    recomputes it on resampled images."""
    stats: dict[str, np.ndarray] = {}
    matches = voc_matches(predictions, ground_truth, iou_thresholds, num_classes)
    for threshold, hits in zip(iou_thresholds, matches, strict=True):
        stats |= hits.to_arrays(f"mAP@{threshold:g}")
        stats[f"mAP@{threshold:g}/use_07_metric"] = np.array(use_07_metric)
    return stats


def abo_statistics(
    predictions: Instances, ground_truth: Instances, num_classes: int
) -> dict[str, np.ndarray]:
    """Per-image sums and counts of ABO's best overlaps (for the bootstrap)."""
    best = best_overlaps(predictions, ground_truth, num_classes)
    images = np.array([i for i, _, _ in best], dtype=np.int64)
    values = np.array([v for _, _, v in best])
    return {
        "abo/num": np.bincount(images, values, minlength=len(ground_truth)),
        "abo/den": np.bincount(images, minlength=len(ground_truth)).astype(np.float64),
    }
