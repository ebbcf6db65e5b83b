"""Evaluation metrics (DESIGN 3), detectron2-style: each `METRICS` entry is an `Evaluator`
that declares its protocol, what it needs and which names it reports, and turns one
`EvalInputs` plus the eval section into values and per-image statistics.

Adding a metric is one registration (here or in any imported module):

    def _area(inputs: EvalInputs, options: Any) -> Evaluation:
        sizes = [sum(int(i["mask"].sum()) for i in image) for image in inputs.predictions]
        return Evaluation({"mean_area": float(np.mean(sizes))})

    METRICS.add("area", Evaluator("area", "area", ("mean_area",), _area))

after which `eval.metrics: [area]` computes it, results.csv files it under protocol
`area`, and `prm-bench tune --metric mean_area` can optimise it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prm_bench.metrics.instance import abo, abo_statistics, coco_map, voc_map, voc_statistics
from prm_bench.metrics.pointing import max_points, pointing_hits, pointing_map, scaled_tolerance
from prm_bench.metrics.prm_quality import prm_quality, prm_statistics
from prm_bench.metrics.semantic import confusions, semantic_miou
from prm_bench.registry import Registry


@dataclass
class EvalInputs:
    """Everything a metric may read about one evaluated split, aligned by image.

    Attributes:
        predictions: per image the method's instances ({"mask", "class", "score"}).
        truth: per image the ground-truth instances ({"mask", "class", "box", "difficult"}).
        void: per image the (H, W) mask of pixels to ignore, or None.
        class_names: the object classes in label order.
        inferred: per image the stored inference at image size ({"crm", "scores",
            "prms", "peaks"}); loaded only when an evaluator needs "inference".
        image_sizes: per image (H, W); loaded only when one needs "image_sizes".
    """

    predictions: list
    truth: list
    void: list
    class_names: list[str]
    inferred: list = field(default_factory=list)
    image_sizes: list = field(default_factory=list)


@dataclass
class Evaluation:
    """A metric's flat {name: value} and its per-image statistics for the bootstrap."""

    values: dict[str, float]
    statistics: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluator:
    """One metric family.

    Attributes:
        name: the registry name (`eval.metrics` entries).
        protocol: the protocol its values are filed under in results.csv.
        headlines: its summary values; "{t}" stands for each of `eval.iou_thresholds`.
        compute: (EvalInputs, eval section) -> Evaluation.
        details: prefixes of its other values (per class, per bucket).
        needs: which optional inputs to load: "inference", "image_sizes".
        description: one line for `prm-bench list metrics`.
    """

    name: str
    protocol: str
    headline: tuple[str, ...]
    compute: Callable[[EvalInputs, Any], Evaluation]
    details: tuple[str, ...] = ()
    needs: frozenset[str] = frozenset()
    description: str = ""

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        needs = ", ".join(sorted(self.needs)) or "instances"
        return f"protocol {self.protocol}; needs {needs}", self.description

    def reports(self, metric: str) -> bool:
        """Whether a result name comes from this metric."""
        stems = [h.split("{")[0] for h in self.headline if "{t}" in h]
        return (
            metric in self.headline
            or any(metric.startswith(s) and "/" not in metric for s in stems)
            or any(metric.startswith(p) for p in self.details)
        )

    def headlines(self, options: Any) -> list[str]:
        """Its summary values (no per-class entries) under the eval section `options`."""
        names = []
        for pattern in self.headline:
            if "{t}" in pattern:
                names += [pattern.replace("{t}", f"{t:g}") for t in options.iou_thresholds]
            else:
                names.append(pattern)
        return names


METRICS: Registry[Evaluator] = Registry(
    "metric",
    """Metrics: `Evaluator` entries (protocol, needs, reported names, compute).""",
)


def _voc(inputs: EvalInputs, options: Any) -> Evaluation:
    n = len(inputs.class_names)
    args = (inputs.predictions, inputs.truth, options.iou_thresholds, options.use_07_metric, n)
    return Evaluation(voc_map(*args, inputs.class_names), voc_statistics(*args))


def _coco(inputs: EvalInputs, options: Any) -> Evaluation:
    values = coco_map(
        inputs.predictions,
        inputs.truth,
        options.iou_thresholds,
        num_classes=len(inputs.class_names),
        class_names=inputs.class_names,
    )
    return Evaluation(values)


def _abo(inputs: EvalInputs, options: Any) -> Evaluation:
    n = len(inputs.class_names)
    values = abo(inputs.predictions, inputs.truth, n, inputs.class_names)
    return Evaluation(values, abo_statistics(inputs.predictions, inputs.truth, n))


def _pointing(inputs: EvalInputs, options: Any) -> Evaluation:
    tolerance = [
        scaled_tolerance(options.tolerance, size, options.tolerance_reference)
        for size in inputs.image_sizes
    ]
    points = [
        {"points": max_points(s["crm"][0], size), "scores": s["scores"][0]}
        for s, size in zip(inputs.inferred, inputs.image_sizes, strict=True)
    ]
    values = pointing_map(points, inputs.truth, tolerance, inputs.class_names)
    values["pointing_tolerance_px"] = float(np.mean(tolerance)) if tolerance else float("nan")
    statistics = pointing_hits(points, inputs.truth, tolerance).to_arrays("pointing_mAP")
    return Evaluation(values, statistics)


def _prm_quality(inputs: EvalInputs, options: Any) -> Evaluation:
    prms = [{"prms": s["prms"], "classes": s["peaks"][:, 1]} for s in inputs.inferred]
    args = (prms, inputs.truth, options.prm_threshold, inputs.void)
    return Evaluation(prm_quality(*args), prm_statistics(*args))


def _semantic(inputs: EvalInputs, options: Any) -> Evaluation:
    n = len(inputs.class_names)
    values = semantic_miou(inputs.predictions, inputs.truth, n, inputs.void, inputs.class_names)
    confusion = confusions(inputs.predictions, inputs.truth, n, inputs.void)
    return Evaluation(values, {"mIoU/confusion": confusion})


_INFERENCE = frozenset({"inference"})
for _entry in (
    Evaluator("voc-map", "voc", ("mAP@{t}",), _voc, ("AP@",),
              description="mAP^r at each IoU threshold, VOC matching rule"),
    Evaluator("coco-map", "coco", ("coco_mAP@{t}",), _coco, ("coco_AP@",),
              description="mAP^r at each IoU threshold through pycocotools COCOeval"),
    Evaluator("abo", "abo", ("abo", "abo_class_mean"), _abo, ("abo/",),
              description="average best overlap of each ground-truth instance"),
    Evaluator("pointing", "pointing", ("pointing_mAP", "pointing_tolerance_px"), _pointing,
              ("pointing_AP/",), _INFERENCE | {"image_sizes"},
              "pointwise localization mAP of class response maxima"),
    Evaluator("prm-quality", "prm-quality",
              ("prm_correct", "prm_score", "prm_correct_present", "prm_score_present",
               "prm_absent"), _prm_quality, ("prm_correct/", "prm_score/", "prm_count/"),
              _INFERENCE, "share of PRMs that fall on one object of their class"),
    Evaluator("semantic", "semantic", ("mIoU",), _semantic, ("IoU/",),
              description="mIoU of the semantic maps made from the instances"),
):  # fmt: skip
    METRICS.add(_entry.name, _entry)


def evaluate(names: Sequence[str], inputs: EvalInputs, options: Any) -> Evaluation:
    """Run the evaluators `names` on `inputs`; their values and statistics merged."""
    merged = Evaluation({})
    for name in names:
        result = METRICS.get(name).compute(inputs, options)
        merged.values |= result.values
        merged.statistics |= result.statistics
    return merged


def protocol_of(metric: str, names: Sequence[str] | None = None) -> str:
    """The protocol of a result name: that of the evaluator (among `names`, default all)
    that reports it."""
    for name in names if names is not None else METRICS.names():
        if METRICS.get(name).reports(metric):
            return METRICS.get(name).protocol
    return "other"


def headline_metrics(names: Sequence[str], options: Any) -> list[str]:
    """The summary values the evaluators `names` report under `options`."""
    return [h for name in names for h in METRICS.get(name).headlines(options)]


__all__ = [
    "METRICS",
    "EvalInputs",
    "Evaluation",
    "Evaluator",
    "abo",
    "coco_map",
    "evaluate",
    "headline_metrics",
    "pointing_map",
    "prm_quality",
    "protocol_of",
    "semantic_miou",
    "voc_map",
]
