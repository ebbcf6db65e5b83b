"""Projected wall time of a whole config on one device, from per-image timings measured
on it (`nox -s gpu`, issue 22 item 5).

A plan's cost is counted per unique stage key, as a run reuses every finished stage:
each training costs its epochs x its training images x the seconds per training image
(with or without the sub-pixel x8 of the training forward), plus one forward of the
evaluation split per epoch (training scores it every epoch); each inference, each
retrieval its evaluated images x their seconds per image. Timings are taken at 448 px
for ResNet50 and VGG16 and scaled by pixel count to other sizes; another backbone is
projected at ResNet50's cost (said in the result), vgg16_bn at VGG16's. The split sizes
of VOC and COCO are their published counts, shapes' the generator's defaults.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prm_bench.config import ExperimentConfig, Plan
from prm_bench.data.shapes import ShapesSpec

REFERENCE_SIZE = 448
STAGE_TIMINGS = ("train", "train_x8", "forward", "infer", "retrieve")
SPLIT_IMAGES = {  # published counts
    "voc": {"train_aug": 10_582, "train": 1_464, "val": 1_449, "trainval": 2_913},
    "coco": {"train2014": 82_783, "val2014": 40_504, "train2017": 118_287, "val2017": 5_000},
}


def split_images(config: ExperimentConfig, split: str, limit: int | None) -> int:
    """How many images a cell reads from `split` (a VOC list file counts by its stem)."""
    if config.data.name == "shapes":
        spec = ShapesSpec()
        counts = {"train": spec.n_train, "val": spec.n_val, "tune": spec.n_tune}
    else:
        counts = SPLIT_IMAGES.get(config.data.name, {})
    name = Path(split).stem
    if name not in counts:
        raise KeyError(f"no published image count for split {split!r} of {config.data.name}")
    return min(counts[name], limit or counts[name])


def _scale(config: ExperimentConfig, timings: dict[str, dict[str, float]]) -> dict[str, float]:
    """The timings of the cell's backbone at its image size."""
    measured = timings.get(config.backbone.name, timings["resnet50"])
    ratio = ((config.data.image_size or REFERENCE_SIZE) / measured["size"]) ** 2
    return {k: v * ratio for k, v in measured.items() if k in STAGE_TIMINGS}


def project(plan: Plan, timings: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Hours of each stage kind and in all for `plan`, from `timings[backbone]` seconds
    per image: `train` (training forward + backward, x1), `train_x8` (with sub-pixel
    x8), `forward` (no-grad scoring), `infer` (CRMs, peaks, PRMs), `retrieve`."""
    seconds = {"train": 0.0, "infer": 0.0, "retrieve": 0.0}
    seen: dict[str, set[str]] = {stage: set() for stage in seconds}
    for cell in plan.cells:
        config, keys = cell.config, cell.keys
        cost = _scale(config, timings)
        evaluated = split_images(config, *config.data.evaluated)
        if keys["train"] not in seen["train"]:
            seen["train"].add(keys["train"])
            x8 = config.stimulation.options.get("upsample", 1) > 1
            per_image = cost["train_x8" if x8 else "train"]
            train = split_images(config, config.data.train_split, config.data.limit_train)
            eval_images = split_images(config, config.data.eval_split, config.data.limit_eval)
            seconds["train"] += config.train.epochs * (
                train * per_image + eval_images * cost["forward"]
            )
        for stage in ("infer", "retrieve"):
            if keys[stage] not in seen[stage]:
                seen[stage].add(keys[stage])
                seconds[stage] += evaluated * cost[stage]
    backbones = {c.config.backbone.name for c in plan.cells}
    return {
        "plan": plan.name,
        "cells": len(plan.cells),
        "unique": {stage: len(keys) for stage, keys in seen.items()},
        "hours": {stage: s / 3600 for stage, s in seconds.items()},
        "total_hours": sum(seconds.values()) / 3600,
        "projected_at_resnet50_cost": sorted(backbones - set(timings)),
    }


def infer_seconds_per_image(
    device: torch.device, backbone: str, images: int, config: ExperimentConfig
) -> dict[str, float]:
    """Mean seconds of the inference stage's per-image work (`infer_image`) over
    `images` random VOC-size (375 x 500) images, with an untrained 20-class model and
    no class or peak threshold: every image backpropagates `infer.max_peaks` peaks (an
    upper bound; a trained model's thresholds keep fewer)."""
    from prm_bench.model.backbones import build_classifier
    from prm_bench.stages.infer import infer_image

    torch.manual_seed(0)
    model = build_classifier(backbone, 20).to(device).eval()
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(images)]
    options = config.infer.model_copy(update={"class_threshold": -1e9, "peak_threshold": -1e9})
    run = lambda image: infer_image(  # noqa: E731
        model, image, options, config.stimulation, config.data.image_size, device
    )
    run(batch[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, peaks = time.perf_counter(), 0
    for image in batch:
        peaks += len(run(image)["peaks"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": (time.perf_counter() - start) / images, "mean_peaks": peaks / images}


def retrieve_seconds_per_image(size: int, peaks: int, proposals: int, repeats: int) -> float:
    """Median seconds of prm-bench's retrieval of one image (`peaks` PRMs against
    `proposals` random masks, gallery prepared in the call, the original's choices)."""
    from benchmarks.retrieval import random_masks
    from benchmarks.timing import timed
    from prm_bench.instances.retrieval import retrieve
    from prm_bench.instances.retrieval_options import RetrievalConfig

    rng = np.random.default_rng(0)
    masks = random_masks(rng, proposals, size)
    prms = rng.random((peaks, size, size)) ** 8
    prms /= prms.sum(axis=(1, 2), keepdims=True)
    rows = np.stack([np.zeros(peaks), rng.integers(0, 3, peaks), np.zeros(peaks),
                     np.zeros(peaks)], 1).astype(int)  # fmt: skip
    crm = rng.standard_normal((1, 3, max(size // 32, 1), max(size // 32, 1)))
    params = RetrievalConfig(resize_mode="legacy")
    return timed(lambda: retrieve(prms, rows, crm, masks, params), repeats, torch.device("cpu"))


def measure(
    device: torch.device, backbones: tuple[str, ...], images: int, size: int, batch: int
) -> dict[str, Any]:
    """Seconds per image of each stage kind at `size` px and `batch` images per step
    (`project`'s timings), measured on `device` with the voc2012.yaml settings (the
    inference at that input size)."""
    from benchmarks.run import bench_train_step
    from benchmarks.timing import timed
    from prm_bench.config import load_plan
    from prm_bench.model.backbones import build_classifier

    voc = load_plan(Path(__file__).parents[1] / "ablations" / "voc2012.yaml").cells[0].config
    config = voc.model_copy(update={"data": voc.data.model_copy(update={"image_size": size})})
    retrieval = retrieve_seconds_per_image(size, 8, 100, 3)
    timings: dict[str, Any] = {}
    for backbone in backbones:
        steps = {u: bench_train_step(device, backbone, size, batch, u, 3) for u in (1, 8)}
        model = build_classifier(backbone, 20).to(device).eval()
        x = torch.randn(batch, 3, size, size, device=device)
        with torch.no_grad():
            forward = timed(lambda m=model, x=x: m(x), 3, device)
        inferred = infer_seconds_per_image(device, backbone, images, config)
        timings[backbone] = {
            "size": size,
            "train": steps[1]["seconds"]["peak"] / batch,
            "train_x8": steps[8]["seconds"]["peak"] / batch,
            "forward": forward / batch,
            "infer": inferred["seconds"],
            "retrieve": retrieval,
            "infer_mean_peaks": inferred["mean_peaks"],
        }
        del model, x
    return timings
