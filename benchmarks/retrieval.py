"""Retrieval and evaluation speed; run by `benchmarks.run` (`nox -s bench`)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from benchmarks.timing import interleaved, seconds_of
from prm_bench.instances.background import legacy_resize
from prm_bench.instances.gallery import prepare_gallery
from prm_bench.instances.retrieval import retrieve
from prm_bench.instances.retrieval_options import RetrievalConfig
from prm_bench.metrics import abo, coco_map, voc_map


def random_masks(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Ellipses of varied size and position, like a proposal gallery."""
    ys, xs = np.mgrid[0:size, 0:size]
    masks = np.zeros((count, size, size), dtype=bool)
    for k in range(count):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(0.03, 0.4, 2) * size
        masks[k] = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    return masks


def _imresize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`scipy.misc.imresize(mask.astype(int), size, interp='nearest')` of a 0/1 mask: the
    values scaled to 0/255 bytes, then PIL's nearest resize (what the original called per
    peak and proposal)."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize(size[::-1], Image.NEAREST))


def original_instance_seg(
    crm: np.ndarray, peaks: np.ndarray, prms: np.ndarray, proposals: np.ndarray, params
) -> list[tuple[float, int, np.ndarray]]:
    """Retrieval as the original code computes it (its `instance_seg`): per PRM, the class
    map resized bicubic (scipy's imresize) into a background mask; per proposal, a nearest
    resize, OpenCV's morphological gradient for the contour, the area check and three
    masked sums; then NMS by pairwise IoU in retrieval-score order. Returns the kept
    instances as (retrieval score, class, mask)."""
    import cv2  # the original's contour; `pip install opencv-python-headless`

    size = prms.shape[1:]
    area_total = size[0] * size[1]
    square = np.ones((params.contour_width, params.contour_width), np.uint8)
    found = []
    for prm, peak in zip(prms, peaks, strict=True):
        response = legacy_resize(crm[0, peak[1]], size)
        background = (response < params.bg_factor * response.mean()).astype(np.float32)
        best, chosen = -np.inf, None
        for proposal in proposals[: params.top_n]:
            raw = _imresize_nearest(proposal, size)
            contour = cv2.morphologyEx(raw, cv2.MORPH_GRADIENT, square).astype(bool)
            mask = raw.astype(bool)
            area = mask.sum()
            if area >= params.max_area * area_total or area < params.min_area * area_total:
                continue
            value = (
                params.alpha * prm[mask].sum()
                + prm[contour].sum()
                - params.beta * background[mask].sum()
            )
            if value > best:
                best, chosen = value, mask
        if chosen is not None:
            found.append((best, int(peak[1]), chosen))
    pending = sorted(found, key=lambda x: x[0], reverse=True)
    kept = []
    while pending:
        head = pending.pop(0)
        kept.append(head)
        union = [np.logical_or(head[2], other[2]).sum() for other in pending]
        inter = [np.logical_and(head[2], other[2]).sum() for other in pending]
        pending = [
            other
            for other, i, u in zip(pending, inter, union, strict=True)
            if i / (u + 1e-10) < params.nms_threshold
        ]
    return kept


def bench_retrieval(
    size: int = 448, peaks: int = 8, proposals: int = 100, repeats: int = 3
) -> dict:
    """prm-bench's retrieval (gallery prepared in the call, and from a prepared gallery)
    against the original's algorithm on the same inputs, with the original's choices
    (legacy resize, NMS at 0.3); best of `repeats`, the variants taking turns."""
    rng = np.random.default_rng(0)
    masks = random_masks(rng, proposals, size)
    prms = rng.random((peaks, size, size)) ** 8
    prms /= prms.sum(axis=(1, 2), keepdims=True)
    peak_rows = np.stack(
        [np.zeros(peaks), rng.integers(0, 3, peaks), np.zeros(peaks), np.zeros(peaks)], 1
    ).astype(int)
    crm = rng.standard_normal((1, 3, size // 32, size // 32))
    params = RetrievalConfig(resize_mode="legacy")
    gallery = prepare_gallery(masks, (size, size), params)
    ours = retrieve(prms, peak_rows, crm, gallery, params)
    original = original_instance_seg(crm, peak_rows, prms, masks, params)
    same = [(i["class"], i["mask"].tobytes()) for i in ours] == [
        (c, m.tobytes()) for _, c, m in original
    ]
    seconds = interleaved(
        {
            "original": lambda: original_instance_seg(crm, peak_rows, prms, masks, params),
            "with_preparation": lambda: retrieve(prms, peak_rows, crm, masks, params),
            "prepared_gallery": lambda: retrieve(prms, peak_rows, crm, gallery, params),
            "preparation_only": lambda: prepare_gallery(masks, (size, size), params),
        },
        repeats,
        torch.device("cpu"),
    )
    return {
        "image_size": size,
        "peaks": peaks,
        "proposals": proposals,
        "instances": len(ours),
        "same_instances_as_original": same,
        "seconds": seconds,
        "speedup_with_preparation": seconds["original"] / seconds["with_preparation"],
        "speedup_prepared_gallery": seconds["original"] / seconds["prepared_gallery"],
    }


def bench_evaluation(images: int = 1449, per_image: int = 20, size: int = 384) -> dict:
    """Time of VOC-style mAP^r, COCO-style mAP^r and ABO over a VOC-val-sized set.

    Masks are drawn from a shared pool (references, not copies) so memory stays small;
    the metrics still compute every IoU.
    """
    rng = np.random.default_rng(1)
    pool = random_masks(rng, 300, size)
    truth, predictions = [], []
    for _ in range(images):
        picks = rng.integers(0, len(pool), 3)
        truth.append([{"mask": pool[p], "class": int(rng.integers(20))} for p in picks])
        predictions.append(
            [
                {"mask": pool[p], "class": int(rng.integers(20)), "score": float(rng.random())}
                for p in rng.integers(0, len(pool), per_image)
            ]
        )
    seconds = {}
    for name, fn in (
        ("voc_map", lambda: voc_map(predictions, truth, (0.25, 0.5, 0.75), num_classes=20)),
        ("coco_map", lambda: coco_map(predictions, truth, (0.25, 0.5, 0.75), num_classes=20)),
        ("abo", lambda: abo(predictions, truth, num_classes=20)),
    ):
        seconds[name] = seconds_of(fn, torch.device("cpu"))
    return {
        "images": images,
        "predictions_per_image": per_image,
        "image_size": size,
        "seconds": seconds,
    }
