"""Evaluation stage: every metric of a cell as flat {name: value} pairs (DESIGN 3), and
the per-image statistics from which the report's bootstrap recomputes them on resampled
images (`prm_bench.metrics.bootstrap`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from prm_bench.config import DataConfig, ExperimentConfig
from prm_bench.data.base import Dataset
from prm_bench.metrics import METRICS, EvalInputs, evaluate
from prm_bench.stages.infer import read_image
from prm_bench.stages.retrieve import read_results
from prm_bench.stages.splits import ground_truth, open_split
from prm_bench.stages.store import Store, load_npz, save_npz, write_json

METRICS_FILE = "metrics.json"
STATISTICS_FILE = "per_image.npz"


def run(config: ExperimentConfig, store: Store, keys: dict[str, str], device: torch.device) -> Path:
    """Compute the configured metrics from the stored inference and instances (on the
    CPU: `device` is part of the stage contract only)."""
    folder = store.reset("evaluate", keys["evaluate"])
    start = time.perf_counter()
    inputs = _inputs(config.data, config.eval.metrics, store, keys)
    result = evaluate(config.eval.metrics, inputs, config.eval)
    write_json(folder / METRICS_FILE, result.values)
    save_npz(folder / STATISTICS_FILE, **result.statistics)
    store.complete(
        "evaluate",
        keys["evaluate"],
        {"seconds": time.perf_counter() - start},
        [METRICS_FILE, STATISTICS_FILE],
    )
    return folder


def _inputs(data: DataConfig, metrics: list[str], store: Store, keys: dict[str, str]) -> EvalInputs:
    """What the configured metrics read: always the instances and void masks, the stored
    inference and image sizes only where a metric declares that it needs them."""
    dataset = open_split(data, "evaluated", segmentation=True)
    needs = set().union(*(METRICS.get(m).needs for m in metrics))
    truth = ground_truth(dataset)
    void = [dataset.void(image_id) for image_id in dataset.ids]
    inputs = EvalInputs(
        predictions=read_results(store.path("retrieve", keys["retrieve"]), dataset.ids),
        truth=truth,
        void=void,
        class_names=dataset.class_names,
    )
    if "inference" in needs:
        folder = store.path("infer", keys["infer"])
        inputs.inferred = [read_image(folder, i, at_image_size=True) for i in dataset.ids]
    if "image_sizes" in needs:
        inputs.image_sizes = [
            _image_size(dataset, i, v) for i, v in zip(dataset.ids, void, strict=True)
        ]
    return inputs


def _image_size(dataset: Dataset, image_id: str, void: np.ndarray | None) -> tuple[int, int]:
    return tuple(void.shape) if void is not None else dataset.image(image_id).shape[:2]


def read_statistics(store: Store, key: str) -> dict[str, np.ndarray]:
    """The per-image statistics of a finished evaluate stage."""
    return load_npz(store.path("evaluate", key) / STATISTICS_FILE)
