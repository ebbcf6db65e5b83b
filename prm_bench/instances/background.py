"""The class-aware term's background masks Q_c (DESIGN 2.5), with the original code's
legacy `imresize` and the float bicubic alternative."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def legacy_resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What the removed `scipy.misc.imresize(values, size, interp='bicubic')` returned for a
    float map: min-max scaled to 0..255, +0.5 and truncated to uint8, then a PIL bicubic
    resize of that 8-bit image. The original code built its background mask this way."""
    return _legacy_resize_bytes(values, size).astype(np.float64)


def _legacy_resize_bytes(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`legacy_resize` as the uint8 image PIL returns."""
    low, high = float(values.min()), float(values.max())
    scale = 255.0 / (high - low) if high > low else 1.0
    image = ((values - low) * scale).clip(0, 255) + 0.5
    resized = Image.fromarray(image.astype(np.uint8)).resize(size[::-1], Image.BICUBIC)
    return np.asarray(resized)


def background_masks(
    class_response_maps: np.ndarray | torch.Tensor,
    size: tuple[int, int],
    bg_factor: float = 0.95,
    resize_mode: str = "bicubic",
) -> np.ndarray:
    """Q_c (k, H, W) bool for maps (k, h, w): 1 where a class response map, resized to
    `size`, is below `bg_factor` times the mean of that resized map."""
    crms = torch.as_tensor(class_response_maps, dtype=torch.float64).detach().cpu()
    if resize_mode == "legacy":
        resized = np.stack([_legacy_resize_bytes(m, size) for m in crms.numpy()])
        # the mean of whole numbers is exact from their integer sum: the float64 mean's value
        total = resized.sum(axis=(1, 2), dtype=np.int64, keepdims=True)
        return resized < bg_factor * (total / (size[0] * size[1]))
    if resize_mode == "bicubic":
        resized = F.interpolate(crms[None], size=size, mode="bicubic", align_corners=False)
        resized = resized[0].numpy()
        return resized < bg_factor * resized.mean(axis=(1, 2), keepdims=True)
    raise ValueError(f"unknown resize_mode {resize_mode!r} (choose bicubic or legacy)")


def background_mask(
    class_response_map: np.ndarray | torch.Tensor,
    size: tuple[int, int],
    bg_factor: float = 0.95,
    resize_mode: str = "bicubic",
) -> np.ndarray:
    """Q_c (H, W) bool of one class response map (h, w); see `background_masks`."""
    return background_masks(
        torch.as_tensor(class_response_map)[None], size, bg_factor, resize_mode
    )[0]
