"""Retrieval and evaluation speed; run by `benchmarks.run` (`nox -s bench`)."""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from prm_bench.metrics import abo, coco_map, voc_map
from prm_bench.retrieval import RetrievalConfig, background_mask, prepare_gallery, retrieve


def random_masks(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Ellipses of varied size and position, like a proposal gallery."""
    ys, xs = np.mgrid[0:size, 0:size]
    masks = np.zeros((count, size, size), dtype=bool)
    for k in range(count):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(0.03, 0.4, 2) * size
        masks[k] = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
    return masks


def loop_retrieve(prms, peaks, crm, masks, params: RetrievalConfig) -> list[int]:
    """The original code's shape: for each PRM, for each proposal, a contour and three sums."""
    size = prms.shape[1:]
    chosen = []
    for prm, peak in zip(prms, peaks, strict=True):
        q = background_mask(crm[0, peak[1]], size, params.bg_factor, params.resize_mode)
        best, best_value = -1, -np.inf
        for index, mask in enumerate(masks[: params.top_n]):
            area = mask.mean()
            if not params.min_area <= area < params.max_area:
                continue
            square = np.ones((params.contour_width, params.contour_width), bool)
            dilated = ndimage.binary_dilation(mask, square)
            eroded = ndimage.binary_erosion(mask, square, border_value=1)
            contour = dilated & ~eroded
            value = (
                params.alpha * prm[mask].sum() + prm[contour].sum() - params.beta * q[mask].sum()
            )
            if value > best_value:
                best, best_value = index, value
        chosen.append(best)
    return chosen


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_retrieval(
    size: int = 448, peaks: int = 8, proposals: int = 100, repeats: int = 3
) -> dict:
    """Vectorized retrieval (fresh and with a prepared gallery) against the loop."""
    rng = np.random.default_rng(0)
    masks = random_masks(rng, proposals, size)
    prms = rng.random((peaks, size, size)) ** 8
    prms /= prms.sum(axis=(1, 2), keepdims=True)
    peak_rows = np.stack(
        [np.zeros(peaks), rng.integers(0, 20, peaks), np.zeros(peaks), np.zeros(peaks)], 1
    ).astype(int)
    crm = rng.standard_normal((1, 20, size // 32, size // 32))
    params = RetrievalConfig(nms_threshold=None)
    gallery = prepare_gallery(masks, (size, size), params)
    fast = [
        i["proposal"]
        for i in sorted(
            retrieve(prms, peak_rows, crm, gallery, params), key=lambda i: i["peaks"][0]
        )
    ]
    slow = loop_retrieve(prms, peak_rows, crm, masks, params)
    seconds = {
        "loop": _median_seconds(lambda: loop_retrieve(prms, peak_rows, crm, masks, params), 1),
        "vectorized_with_preparation": _median_seconds(
            lambda: retrieve(prms, peak_rows, crm, masks, params), repeats
        ),
        "vectorized_prepared_gallery": _median_seconds(
            lambda: retrieve(prms, peak_rows, crm, gallery, params), repeats
        ),
        "preparation_only": _median_seconds(
            lambda: prepare_gallery(masks, (size, size), params), repeats
        ),
    }
    return {
        "image_size": size,
        "peaks": peaks,
        "proposals": proposals,
        "same_choices_as_loop": fast == slow,
        "seconds": seconds,
        "speedup_with_preparation": seconds["loop"] / seconds["vectorized_with_preparation"],
        "speedup_prepared_gallery": seconds["loop"] / seconds["vectorized_prepared_gallery"],
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
        seconds[name] = _median_seconds(fn, 1)
    return {
        "images": images,
        "predictions_per_image": per_image,
        "image_size": size,
        "seconds": seconds,
    }
