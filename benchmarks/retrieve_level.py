"""The retrieve level of a grid at full.yaml's shape: 9 term subsets x 3 confidences on
400 images, one cell at a time against all cells in one pass (`benchmarks.run`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from prm_bench.config import load_plan
from prm_bench.data.shapes import ShapesSpec, generate_shapes
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages import retrieve
from prm_bench.stages.store import Store

TERMS = [
    "full", "no-instance", "no-boundary", "no-class", "instance-only", "boundary-only",
    "instance+boundary", "instance+class", "class+boundary",
]  # fmt: skip


def bench_retrieve_level(images: int = 400) -> dict:
    """Seconds of the retrieve level of 27 cells that share one inference: one task per
    cell (each reads the inference and prepared gallery and sums the PRMs itself) against
    one pass over the images for all cells; both read stored prepared galleries, and
    their results files are compared byte for byte."""
    with tempfile.TemporaryDirectory() as folder:
        spec = ShapesSpec(n_train=200, n_val=images, n_tune=0, seed=11)
        root = generate_shapes(Path(folder) / "shapes", spec)
        config = {
            "data": {"name": "shapes", "root": str(root)},
            "backbone": {"name": "resnet10t"},
            "train": {"epochs": 1},
            "infer": {"upsample": 4, "max_peaks": 20},
            "grid": {
                "retrieval.terms": TERMS,
                "retrieval.confidence": ["retrieval", "class", "peak"],
            },
        }
        plan = bind_data(load_plan(config))
        first = load_plan({**config, "grid": {"retrieval.terms": ["full"]}})
        run_plan(
            first, RunOptions(Path(folder) / "runs")
        )  # trains, infers and prepares the galleries
        store = Store(Path(folder) / "runs" / first.name / "store")
        configs = [cell.config for cell in plan.cells]
        keys = [cell.keys for cell in plan.cells]
        cpu = torch.device("cpu")

        def files() -> list[bytes]:
            return [
                (store.path("retrieve", k["retrieve"]) / retrieve.RESULTS).read_bytes()
                for k in keys
            ]

        start = time.perf_counter()
        for c, k in zip(configs, keys, strict=True):
            retrieve.run(c, store, k, cpu)
        alone = time.perf_counter() - start
        one_at_a_time = files()
        start = time.perf_counter()
        errors = retrieve.run_cells(configs, store, keys, cpu)
        together = time.perf_counter() - start
        assert not any(errors), errors
        instances = sum(store.record("retrieve", k["retrieve"])["instances"] for k in keys)
        return {
            "image_size": spec.size,
            "images": images,
            "cells": len(configs),
            "instances": instances,
            "identical_results": files() == one_at_a_time,
            "seconds": {"cell_at_a_time": alone, "one_pass": together},
            "speedup_one_pass_over_cell_at_a_time": alone / together,
        }
