"""Stage reuse: extend a finished grid along a retrieval axis (`benchmarks.run`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prm_bench.config import load_plan
from prm_bench.data.shapes import ShapesSpec, generate_shapes
from prm_bench.orchestrate.runner import RunOptions, run_plan


def bench_rerun() -> dict:
    """Add one value to `retrieval.terms` of a finished grid: only retrieve and evaluate
    run for the new cell; compare with running that cell from scratch. The training scale
    is `ablations/quick.yaml`'s (1,000 images, 3 epochs, resnet10t) on 100 val images."""
    with tempfile.TemporaryDirectory() as folder:
        root = generate_shapes(Path(folder) / "shapes", ShapesSpec(n_train=1000, n_val=100, seed=5))
        base = {
            "data": {"name": "shapes", "root": str(root)},
            "backbone": {"name": "resnet10t"},
            "train": {"epochs": 3},
            "infer": {"upsample": 2},
        }
        run_plan(
            load_plan({**base, "grid": {"retrieval.terms": ["full", "no-class"]}}),
            RunOptions(Path(folder) / "runs"),
        )
        start = time.perf_counter()
        extended = run_plan(
            load_plan({**base, "grid": {"retrieval.terms": ["full", "no-class", "no-instance"]}}),
            RunOptions(Path(folder) / "runs"),
        )
        rerun = time.perf_counter() - start
        start = time.perf_counter()
        run_plan(
            load_plan({**base, "grid": {"retrieval.terms": ["no-instance"]}}),
            RunOptions(Path(folder) / "scratch"),
        )
        scratch = time.perf_counter() - start
    return {
        "image_size": 128,
        "executed_stages_on_rerun": extended.executed,
        "seconds": {"rerun_with_new_value": rerun, "new_cell_from_scratch": scratch},
        "speedup_rerun_over_scratch": scratch / rerun,
    }
