"""A proposal gallery prepared once per image for scoring (DESIGN 2.5): the first
`top_n` proposals at PRM size, as runs of consecutive pixels, with their contours (the
morphological gradient), areas and validity. Every peak, grid cell and later run reuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from prm_bench.geometry.pixel_runs import Runs, gallery_runs, pack_rows
from prm_bench.instances.retrieval_options import RetrievalConfig, retrieval_config


def resize_nearest(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Masks (P, H, W) resized to `size` by nearest neighbour (PIL's, as the original)."""
    if masks.shape[1:] == size:
        return masks
    return np.stack(
        [
            np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size[::-1], Image.NEAREST), bool)
            for m in masks
        ]
    ).reshape(len(masks), *size)


@dataclass
class PreparedGallery:
    """An image's proposals ready for scoring: first `top_n`, at PRM size (H, W)."""

    masks: Runs
    contours: Runs
    valid: np.ndarray  # (P,) area within [min_area, max_area)
    size: tuple[int, int]
    key: tuple  # the parameters it was prepared with

    def dense(self, index: int) -> np.ndarray:
        """Proposal `index` as an (H, W) bool mask."""
        return self.masks.dense(index, self.size)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The gallery as named arrays (for an npz cache); `from_arrays` inverts it."""
        arrays = {"valid": self.valid, "key": np.array(json.dumps(self.key))}
        for name, runs in (("masks", self.masks), ("contours", self.contours)):
            for field in ("starts", "ends", "offsets"):
                arrays[f"{name}_{field}"] = getattr(runs, field)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PreparedGallery:
        """A gallery saved with `to_arrays`."""
        key = json.loads(str(arrays["key"]))
        runs = {
            name: Runs(*(arrays[f"{name}_{f}"] for f in ("starts", "ends", "offsets")))
            for name in ("masks", "contours")
        }
        size = (int(key[-1][0]), int(key[-1][1]))
        key = (*key[:-1], size)
        return cls(runs["masks"], runs["contours"], arrays["valid"].astype(bool), size, key)


def _gallery_key(params: RetrievalConfig, size: tuple[int, int]) -> tuple:
    return (params.contour_width, params.min_area, params.max_area, params.top_n, size)


def gallery_key(params: RetrievalConfig | dict, size: tuple[int, int]) -> tuple:
    """What a prepared gallery depends on: the preparation parameters and the PRM size."""
    return _gallery_key(retrieval_config(params), (int(size[0]), int(size[1])))


def prepare_gallery(
    proposals: np.ndarray, size: tuple[int, int], params: RetrievalConfig | dict | None = None
) -> PreparedGallery:
    """Prepare proposals (P, h, w) bool for PRMs of `size` (H, W): resize (nearest), keep
    the first `top_n`, compute contours, areas and validity once."""
    params = retrieval_config(params)
    size = (int(size[0]), int(size[1]))
    masks = resize_nearest(np.asarray(proposals, dtype=bool)[: params.top_n], size)
    bits = pack_rows(masks, margin=params.contour_width)
    runs, edges = gallery_runs(bits, size[1], params.contour_width)
    area = runs.areas() / (size[0] * size[1])
    valid = (area >= params.min_area) & (area < params.max_area)
    return PreparedGallery(
        masks=runs,
        contours=edges,
        valid=valid,
        size=size,
        key=_gallery_key(params, size),
    )
