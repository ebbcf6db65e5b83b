"""Resizing response maps to image size, shared by the metrics, the CAM baselines and the
report's figures.

torch does the interpolation (its bilinear rule is the one the original code and the
stages use), imported when a map is first resized: the modules that call this are
imported by config validation and `prm-bench list`, which answer without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def resize_maps(maps: Any, size: tuple[int, int]) -> np.ndarray:
    """Maps (B, C, h, w) (an array or a tensor) bilinearly resized to (B, C, *size) in
    float32, with torch's `align_corners=False` rule."""
    import torch
    import torch.nn.functional as F

    tensor = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False).numpy()
