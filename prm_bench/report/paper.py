"""The paper's published numbers (Zhou et al., CVPR 2018; PASCAL VOC 2012 val, %), keyed
by the harness's own axis values so they can stand beside measured rows (DESIGN 7)."""

from __future__ import annotations

# (axis, value) -> {metric: paper value}; metric names are the harness's.
PAPER: dict[tuple[str, str], dict[str, float]] = {
    ("method.name", "prm"): {
        "mAP@0.25": 44.3,
        "mAP@0.5": 26.8,
        "mAP@0.75": 9.0,
        "abo": 37.6,
        "mIoU": 53.4,
    },
    # CAM + MCG is the paper's only CAM-based instance baseline: our cam-proposal.
    ("method.name", "cam-proposal"): {
        "mAP@0.25": 20.4,
        "mAP@0.5": 7.8,
        "mAP@0.75": 2.5,
        "abo": 23.0,
    },
    ("retrieval.terms", "full"): {"mAP@0.5": 26.8},
    ("retrieval.terms", "no-instance"): {"mAP@0.5": 13.3},
    ("proposals.gallery", "embedded"): {"mAP@0.75": 9.0},  # MCG in the paper
    ("proposals.gallery", "gt+embedded"): {"mAP@0.75": 26.9},  # MCG + GT masks
    ("proposals.gallery", "gt"): {"mAP@0.75": 73.3},
    ("stimulation.name", "peak"): {
        "pointing_mAP": 85.5,
        "prm_correct": 64.0,
        "prm_score/1": 78.0,
        "prm_score/2-5": 67.0,
        "prm_score/6+": 51.0,
    },
    ("stimulation.name", "gap"): {"pointing_mAP": 81.5, "prm_correct": 55.7},
    ("stimulation.name", "gmp"): {"pointing_mAP": 74.5, "prm_correct": 60.9},
    ("stimulation.name", "maxmin"): {"pointing_mAP": 82.9, "prm_correct": 62.4},
}

# Backbones are matched by family, so small stand-ins (e.g. vgg11, resnet10t) sit beside
# the paper's VGG16 and ResNet50.
BACKBONE_FAMILIES = {"vgg": {"mAP@0.5": 22.8}, "resnet": {"mAP@0.5": 26.8}}


def paper_value(axis: str, value: str, metric: str) -> float | None:
    """The paper's number for a row (axis = value) and metric, if it published one."""
    if axis == "backbone.name":
        name = str(value).removeprefix("timm:")
        family = next((f for f in BACKBONE_FAMILIES if name.startswith(f)), None)
        return BACKBONE_FAMILIES[family].get(metric) if family else None
    return PAPER.get((axis, str(value)), {}).get(metric)
