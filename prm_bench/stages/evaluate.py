"""Evaluation stage: every metric of a cell as flat {name: value} pairs (DESIGN 3), and
the per-image statistics from which the report's bootstrap recomputes them on resampled
images (`prm_bench.metrics.bootstrap`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from prm_bench.config import ExperimentConfig
from prm_bench.metrics import abo, coco_map, pointing_map, prm_quality, semantic_miou, voc_map
from prm_bench.metrics.instance import instance_statistics
from prm_bench.metrics.pointing import max_points, pointing_hits, scaled_tolerance
from prm_bench.metrics.prm_quality import prm_statistics
from prm_bench.metrics.semantic import confusions
from prm_bench.stages.common import open_split
from prm_bench.stages.infer import read_image
from prm_bench.stages.retrieve import read_results
from prm_bench.stages.store import Store, load_npz, save_npz, write_json

METRICS_FILE = "metrics.json"
STATISTICS_FILE = "per_image.npz"


def run(config: ExperimentConfig, store: Store, keys: dict[str, str]) -> Path:
    """Compute the configured metrics from the stored inference and instances."""
    folder = store.reset("evaluate", keys["evaluate"])
    dataset = open_split(config, "eval", segmentation=True)
    names, n_classes = dataset.class_names, len(dataset.class_names)
    start = time.perf_counter()
    truth = [
        [
            {"mask": i.mask, "class": i.label, "box": i.box, "difficult": i.difficult}
            for i in dataset.instances(image_id)
        ]
        for image_id in dataset.ids
    ]
    void = [dataset.void(image_id) for image_id in dataset.ids]
    predictions = read_results(store.path("retrieve", keys["retrieve"]), dataset.ids)
    needs_inference = {"pointing", "prm-quality"} & set(config.eval.metrics)
    infer_folder = store.path("infer", keys["infer"])
    inferred = (
        [read_image(infer_folder, i, at_image_size=True) for i in dataset.ids]
        if needs_inference
        else []
    )
    options = config.eval
    values: dict[str, float] = {}
    stats: dict[str, np.ndarray] = {}
    for metric in options.metrics:
        if metric == "voc-map":
            values |= voc_map(
                predictions, truth, options.iou_thresholds, options.use_07_metric, n_classes, names
            )
        elif metric == "coco-map":
            values |= coco_map(
                predictions, truth, options.iou_thresholds, num_classes=n_classes, class_names=names
            )
        elif metric == "abo":
            values |= abo(predictions, truth, n_classes, names)
        elif metric == "pointing":
            sizes = [_image_size(dataset, i, v) for i, v in zip(dataset.ids, void, strict=True)]
            tolerance = [
                scaled_tolerance(options.tolerance, size, options.tolerance_reference)
                for size in sizes
            ]
            points = [
                {"points": max_points(s["crm"][0], size), "scores": s["scores"][0]}
                for s, size in zip(inferred, sizes, strict=True)
            ]
            values |= pointing_map(points, truth, tolerance, names)
            values["pointing_tolerance_px"] = float(np.mean(tolerance))
            stats |= pointing_hits(points, truth, tolerance).to_arrays("pointing_mAP")
        elif metric == "prm-quality":
            prms = [{"prms": s["prms"], "classes": s["peaks"][:, 1]} for s in inferred]
            values |= prm_quality(prms, truth, options.prm_threshold, void)
            stats |= prm_statistics(prms, truth, options.prm_threshold, void)
        elif metric == "semantic":
            values |= semantic_miou(predictions, truth, n_classes, void, names)
            stats["mIoU/confusion"] = confusions(predictions, truth, n_classes, void)
    if {"voc-map", "abo"} & set(options.metrics):
        stats |= instance_statistics(
            predictions, truth, options.iou_thresholds, options.use_07_metric, n_classes
        )
    write_json(folder / METRICS_FILE, values)
    save_npz(folder / STATISTICS_FILE, **stats)
    store.complete(
        "evaluate",
        keys["evaluate"],
        {"seconds": time.perf_counter() - start},
        [METRICS_FILE, STATISTICS_FILE],
    )
    return folder


def _image_size(dataset, image_id: str, void: np.ndarray | None) -> tuple[int, int]:
    return tuple(void.shape) if void is not None else dataset.image(image_id).shape[:2]


def read_statistics(store: Store, key: str) -> dict[str, np.ndarray]:
    """The per-image statistics of a finished evaluate stage."""
    return load_npz(store.path("evaluate", key) / STATISTICS_FILE)
