"""Evaluation metrics (DESIGN 3); each returns a flat {name: value} dict.

`METRICS` maps a metric name to its function; the inputs are documented on each function
(instance metrics take per-image lists of instance dicts).
"""

from __future__ import annotations

from collections.abc import Callable

from prm_bench.metrics.instance import abo, coco_map, voc_map
from prm_bench.metrics.pointing import pointing_map
from prm_bench.metrics.prm_quality import prm_quality
from prm_bench.metrics.semantic import semantic_miou
from prm_bench.registry import Registry

METRICS: Registry[Callable[..., dict[str, float]]] = Registry(
    "metric",
    """Metrics: functions returning a flat {name: value} dict (DESIGN 3).""",
)
METRICS.add("voc-map", voc_map)
METRICS.add("coco-map", coco_map)
METRICS.add("abo", abo)
METRICS.add("pointing", pointing_map)
METRICS.add("prm-quality", prm_quality)
METRICS.add("semantic", semantic_miou)

__all__ = ["METRICS", "abo", "coco_map", "pointing_map", "prm_quality", "semantic_miou", "voc_map"]
