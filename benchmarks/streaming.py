"""Training data memory: the split held whole (the former `load_images`) against the
batches streamed by `prm_bench.stages.inputs.batches`, on a synthetic VOC-size split.

Each variant runs in a fresh process so its peak RSS is its own (loader workers are
reported apart: their peak is the largest of them)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from prm_bench.stages.inputs import BatchPlan as Plan
from prm_bench.stages.inputs import ImageSplit, batches, image_tensor


class _Synthetic:
    """`count` RGB images of 500 x 375 px (VOC's usual size), made from the id."""

    class_names = ("a", "b")

    def __init__(self, count: int) -> None:
        self.ids = [str(i) for i in range(count)]

    def image(self, image_id: str) -> np.ndarray:
        rng = np.random.default_rng(int(image_id))
        return rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)

    def labels(self, image_id: str) -> np.ndarray:
        return np.array([1.0, 0.0], dtype=np.float32)


def _peak_rss_gb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, it is not inherited from the
    process that forked this one before exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _measure(mode: str, count: int, size: int, batch: int, workers: int) -> dict:
    dataset = _Synthetic(count)
    start = time.perf_counter()
    if mode == "whole":
        images = torch.cat([image_tensor(dataset.image(i), size) for i in dataset.ids])
        for first in range(0, count, batch):
            images[first : first + batch].float().mean()
    else:
        split = ImageSplit(dataset, size)
        order = [list(range(f, min(f + batch, count))) for f in range(0, count, batch)]
        for chunk in batches(split, Plan(order), workers):
            chunk.float().mean()
    own = _peak_rss_gb()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {
        "mode": mode,
        "workers": workers,
        "seconds": time.perf_counter() - start,
        "peak_rss_gb": own,
        "peak_rss_worker_gb": children,
    }


def bench_streaming(count: int = 10_000, size: int = 448, batch: int = 16) -> dict:
    """One epoch of batches over `count` images at `size` px: held whole vs streamed
    with 0 and 2 loader processes (each in its own process)."""
    runs = {}
    for mode, workers in (("whole", 0), ("streamed", 0), ("streamed", 2)):
        code = (
            "import json, sys; from benchmarks.streaming import _measure; "
            f"print(json.dumps(_measure({mode!r}, {count}, {size}, {batch}, {workers})))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            runs[f"{mode}/{workers}"] = {"error": out.stderr.strip().splitlines()[-1]}
            continue
        runs[f"{mode}/{workers}"] = json.loads(out.stdout.strip().splitlines()[-1])
    seconds = {k: v.get("seconds", float("nan")) for k, v in runs.items()}
    whole = runs.get("whole/0", {}).get("peak_rss_gb", float("nan"))
    streamed = runs.get("streamed/0", {}).get("peak_rss_gb", float("nan"))
    return {
        "image_size": size,
        "images": count,
        "batch": batch,
        "runs": runs,
        "seconds": seconds,
        "speedup_memory_whole_over_streamed": whole / streamed,
    }
