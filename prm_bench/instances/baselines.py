"""CAM baselines for the comparison table (DESIGN 2.6).

A `gap`-trained classifier's class activation map of each present class is upsampled to
the image, thresholded at a fraction of its maximum, and split into connected components;
each component's box becomes an instance mask: the filled box (`cam-rect`), the largest
ellipse inscribed in it (`cam-ellipse`), or the proposal of highest IoU with the box
(`cam-proposal`). Instances have the same form as `retrieve`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from prm_bench.geometry.maps import resize_maps
from prm_bench.geometry.masks import mask_iou
from prm_bench.registry import Registry


class BaselineConfig(BaseModel):
    """Options of the CAM baselines.

    Attributes:
        cam_threshold: keep pixels at or above this fraction of the class map's maximum.
        class_threshold: a class is present when its score is at least this.
        min_area: smallest component kept, as a fraction of the image.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cam_threshold: float = Field(0.2, gt=0, le=1)
    class_threshold: float = 0.0
    min_area: float = Field(0.001, ge=0)


Box = tuple[int, int, int, int]
BoxToMask = Callable[[Box, tuple[int, int], np.ndarray | None], tuple[np.ndarray, int]]


@dataclass(frozen=True)
class BaselineSpec:
    """A CAM baseline: how a box becomes a mask, and what it needs.

    Attributes:
        name: the registry name (`method.name` in configs).
        to_mask: (box, image size, proposals or None) -> (mask, proposal index or -1).
        needs_proposals: reads the cell's proposal gallery.
        description: one line for `prm-bench list`.
    """

    name: str
    to_mask: BoxToMask
    needs_proposals: bool
    description: str

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        return ("needs proposals" if self.needs_proposals else "-"), self.description


BASELINES: Registry[BaselineSpec] = Registry(
    "baseline",
    """CAM baselines: each `BaselineSpec` turns a box (x0, y0, x1, y1) into (mask, proposal
    index or -1) given the image size and, for `cam-proposal`, the proposals. Each is also
    an instance method (`prm_bench.instances.methods`).""",
)


def baseline(
    name: str, *, needs_proposals: bool, description: str
) -> Callable[[BoxToMask], BoxToMask]:
    """Register a box-to-mask function as the CAM baseline `name`."""

    def decorator(function: BoxToMask) -> BoxToMask:
        BASELINES.add(name, BaselineSpec(name, function, needs_proposals, description))
        return function

    return decorator


@baseline("cam-rect", needs_proposals=False, description="CAM box filled")
def box_mask(
    box: Box, size: tuple[int, int], proposals: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """The filled box."""
    x0, y0, x1, y1 = box
    mask = np.zeros(size, dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask, -1


@baseline("cam-ellipse", needs_proposals=False, description="ellipse inscribed in the CAM box")
def ellipse_mask(
    box: Box, size: tuple[int, int], proposals: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """The largest axis-aligned ellipse inscribed in the box (pixel centres inside)."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ry, rx = (y1 - y0 + 1) / 2, (x1 - x0 + 1) / 2
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0, -1


@baseline(
    "cam-proposal", needs_proposals=True, description="proposal of highest IoU with the CAM box"
)
def proposal_mask(
    box: Box, size: tuple[int, int], proposals: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """The proposal of highest IoU with the filled box (the first on a tie)."""
    if proposals is None or len(proposals) == 0:
        raise ValueError("cam-proposal needs a non-empty proposal gallery")
    rect, _ = box_mask(box, size)
    best = int(mask_iou(rect[None], np.asarray(proposals, bool))[0].argmax())
    return np.asarray(proposals[best], bool), best


def cam_boxes(cam: np.ndarray, params: BaselineConfig) -> list[tuple[Box, float]]:
    """Boxes of the connected components of a thresholded class activation map, each
    with its peak activation as confidence."""
    peak = float(cam.max())
    if peak <= 0:
        return []
    components, _ = ndimage.label(cam >= params.cam_threshold * peak, structure=np.ones((3, 3)))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        region = components[found] == index
        if region.sum() < params.min_area * cam.size:
            continue
        ys, xs = found
        box = (xs.start, ys.start, xs.stop - 1, ys.stop - 1)
        boxes.append((box, float(cam[found][region].max())))
    return boxes


def cam_baseline(
    name: str,
    class_response_maps: Any,
    class_scores: Any,
    image_size: tuple[int, int],
    proposals: np.ndarray | None = None,
    params: BaselineConfig | dict | None = None,
) -> list[dict[str, Any]]:
    """Instances of one image from a CAM baseline.

    Args:
        name: `cam-rect`, `cam-ellipse` or `cam-proposal`.
        class_response_maps: (1, C, h, w) of a classifier trained with `gap`.
        class_scores: (1, C).
        image_size: (H, W) of the image.
        proposals: (P, H, W) bool, for `cam-proposal`.
        params: `BaselineConfig` or a dict of its fields.

    Returns:
        Instances by descending confidence: `mask`, `class`, `score`, `proposal`, `peaks`.

    Takes six parameters: the baseline's name, the image's maps, scores and size, its
    proposals, and the options.
    """
    to_mask = BASELINES.get(name).to_mask
    params = BaselineConfig.model_validate(params or {})
    maps = resize_maps(class_response_maps, image_size)[0]
    scores = np.asarray(class_scores, dtype=np.float64).reshape(-1)
    instances = []
    for c in np.flatnonzero(scores >= params.class_threshold):
        for box, confidence in cam_boxes(maps[c], params):
            mask, proposal = to_mask(box, image_size, proposals)
            instances.append(
                {
                    "mask": mask,
                    "class": int(c),
                    "score": confidence,
                    "proposal": proposal,
                    "peaks": [],
                }
            )
    return sorted(instances, key=lambda i: -i["score"])
