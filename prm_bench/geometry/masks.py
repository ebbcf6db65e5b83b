"""Mask utilities shared by galleries, retrieval and metrics: IoU matrices and COCO RLE."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from prm_bench.geometry.pixel_runs import pack_rows


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) between boolean masks a (N, H, W) and b (M, H, W), float32.

    Pixels are counted on packed bits (64 to a word: AND, then popcount); counts are exact
    and the ratio is taken in float32. A pair of empty masks has IoU 0.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    bits_a, bits_b = _packed(a), _packed(b)
    inter = np.zeros((len(a), len(b)), dtype=np.int64)
    rows = max(1, (1 << 17) // max(1, bits_b.size))  # rows of a per block of ~1 MB
    for start in range(0, len(a), rows):
        block = bits_a[start : start + rows, None] & bits_b[None]
        inter[start : start + rows] = np.bitwise_count(block).sum(axis=2)
    inter = inter.astype(np.float32)
    area_a = np.bitwise_count(bits_a).sum(axis=1).astype(np.float32)
    area_b = np.bitwise_count(bits_b).sum(axis=1).astype(np.float32)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), np.float32(0))


def _packed(masks: np.ndarray) -> np.ndarray:
    """Boolean masks (N, ...) flattened and packed into (N, words) 64-bit words: each
    mask as one row of `pack_rows`."""
    masks = np.asarray(masks, dtype=bool)
    flat = masks.reshape(len(masks), 1, int(np.prod(masks.shape[1:])))
    return pack_rows(flat).reshape(len(masks), -1)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of one (H, W) boolean mask, JSON-ready (counts as a string)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_box(rle: dict) -> list[float]:
    """COCO [x, y, w, h] box of a JSON-ready RLE."""
    return [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})]
