"""Evaluation stage: every metric of a cell as flat {name: value} pairs (DESIGN 3)."""

from __future__ import annotations

import time
from pathlib import Path

from prm_bench.config import ExperimentConfig
from prm_bench.metrics import abo, coco_map, pointing_map, prm_quality, semantic_miou, voc_map
from prm_bench.metrics.pointing import max_points
from prm_bench.stages.common import open_split
from prm_bench.stages.infer import read_image
from prm_bench.stages.retrieve import read_results
from prm_bench.stages.store import Store, write_json

METRICS_FILE = "metrics.json"


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
    predictions = read_results(store.path("retrieve", keys["retrieve"]), dataset.ids)
    needs_inference = {"pointing", "prm-quality"} & set(config.eval.metrics)
    infer_folder = store.path("infer", keys["infer"])
    inferred = [read_image(infer_folder, i) for i in dataset.ids] if needs_inference else []
    options = config.eval
    values: dict[str, float] = {}
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
            points = [
                {
                    "points": max_points(
                        s["crm"][0], t[0]["mask"].shape if t else dataset.image(i).shape[:2]
                    ),
                    "scores": s["scores"][0],
                }
                for s, t, i in zip(inferred, truth, dataset.ids, strict=True)
            ]
            values |= pointing_map(points, truth, options.tolerance, names)
        elif metric == "prm-quality":
            prms = [{"prms": s["prms"], "classes": s["peaks"][:, 1]} for s in inferred]
            values |= prm_quality(prms, truth)
        elif metric == "semantic":
            values |= semantic_miou(predictions, truth, n_classes, class_names=names)
    write_json(folder / METRICS_FILE, values)
    store.complete(
        "evaluate", keys["evaluate"], {"seconds": time.perf_counter() - start}, [METRICS_FILE]
    )
    return folder
