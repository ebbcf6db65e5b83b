"""Mask utilities shared by galleries, retrieval and metrics: IoU matrices and COCO RLE."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) between boolean masks a (N, H, W) and b (M, H, W).

    Intersections come from one matrix product; a pair of empty masks has IoU 0.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    flat_a = a.reshape(len(a), -1).astype(np.float32)
    flat_b = b.reshape(len(b), -1).astype(np.float32)
    inter = flat_a @ flat_b.T
    union = flat_a.sum(1)[:, None] + flat_b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of one (H, W) boolean mask, JSON-ready (counts as a string)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_box(rle: dict) -> list[float]:
    """COCO [x, y, w, h] box of a JSON-ready RLE."""
    return [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})]
