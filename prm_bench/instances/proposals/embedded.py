"""Embedded, training-free mask proposals (DESIGN 2.7): a stand-in for MCG.

Felzenszwalb superpixels at several scales are merged greedily over their region adjacency
graph (selective-search similarity: colour histogram, size, fill); every region of every
hierarchy is a candidate. Candidates are ranked by how much their mean colour stands out
from the ring of superpixels around them, relative to their own colour spread, then
near-duplicates (IoU > 0.9) are dropped and the top N kept. Region statistics are
aggregated per superpixel, so no candidate mask is drawn until it is selected.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb

from prm_bench.geometry.masks import mask_iou


@dataclass(frozen=True)
class EmbeddedParams:
    """Options of the embedded generator.

    Attributes:
        scales: Felzenszwalb `scale` values, one hierarchy each.
        sigma: Felzenszwalb pre-smoothing.
        min_size: smallest superpixel in pixels at 128 x 128 (scaled with image area).
        top_n: proposals kept per image.
        min_area, max_area: kept candidates' area as fractions of the image.
        dedup_iou: a candidate overlapping a kept one above this IoU is dropped.
    """

    scales: tuple[float, ...] = (50.0, 150.0, 300.0)
    sigma: float = 0.8
    min_size: int = 20
    top_n: int = 100
    min_area: float = 0.002
    max_area: float = 0.85
    dedup_iou: float = 0.9


_BINS = 10


def _adjacency(labels: np.ndarray, n: int) -> np.ndarray:
    """Symmetric boolean adjacency (n, n) of 4-connected superpixels."""
    adjacent = np.zeros((n, n), dtype=bool)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        differ = a != b
        adjacent[a[differ], b[differ]] = True
    return adjacent | adjacent.T


def _superpixel_stats(labels: np.ndarray, lab: np.ndarray, n: int) -> dict[str, np.ndarray]:
    flat = labels.ravel()
    pixels = lab.reshape(-1, 3).astype(np.float64)
    size = np.bincount(flat, minlength=n).astype(np.float64)
    total = np.stack([np.bincount(flat, pixels[:, c], n) for c in range(3)], axis=1)
    square = np.stack([np.bincount(flat, pixels[:, c] ** 2, n) for c in range(3)], axis=1)
    low, high = pixels.min(0), pixels.max(0)
    bins = np.clip(((pixels - low) / (high - low + 1e-6) * _BINS).astype(int), 0, _BINS - 1)
    hist = np.zeros((n, 3 * _BINS))
    for c in range(3):
        np.add.at(hist, (flat, c * _BINS + bins[:, c]), 1.0)
    height, width = labels.shape
    ys, xs = np.divmod(np.arange(flat.size), width)
    box = np.stack(
        [
            np.full(n, height, dtype=float),
            np.full(n, width, dtype=float),
            np.zeros(n),
            np.zeros(n),
        ],
        axis=1,
    )
    np.minimum.at(box[:, 0], flat, ys)
    np.minimum.at(box[:, 1], flat, xs)
    np.maximum.at(box[:, 2], flat, ys)
    np.maximum.at(box[:, 3], flat, xs)
    return {"size": size, "sum": total, "square": square, "hist": hist, "box": box}


def merge_hierarchy(labels: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Greedy selective-search merging; returns membership (R, n) bool of every region
    (the n superpixels first, then one row per merge)."""
    n = int(labels.max()) + 1
    stats = _superpixel_stats(labels, lab, n)
    area = float(labels.size)
    size = list(stats["size"])
    hist = list(stats["hist"] / np.maximum(stats["size"][:, None], 1))
    box = list(stats["box"])
    neighbours = [set(np.flatnonzero(row)) for row in _adjacency(labels, n)]
    members = [np.eye(1, n, i, dtype=bool)[0] for i in range(n)]
    alive = [True] * n

    def similarity(i: int, j: int) -> float:
        colour = np.minimum(hist[i], hist[j]).sum() / 3
        joint = np.concatenate(
            [np.minimum(box[i][:2], box[j][:2]), np.maximum(box[i][2:], box[j][2:])]
        )
        filled = (joint[2] - joint[0] + 1) * (joint[3] - joint[1] + 1)
        return colour + (1 - (size[i] + size[j]) / area) + (1 - (filled - size[i] - size[j]) / area)

    heap = [(-similarity(i, j), i, j) for i in range(n) for j in neighbours[i] if i < j]
    heapq.heapify(heap)
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        k = len(size)
        size.append(size[i] + size[j])
        hist.append((hist[i] * size[i] + hist[j] * size[j]) / size[k])
        box.append(
            np.concatenate([np.minimum(box[i][:2], box[j][:2]), np.maximum(box[i][2:], box[j][2:])])
        )
        members.append(members[i] | members[j])
        alive[i] = alive[j] = False
        alive.append(True)
        neighbours.append((neighbours[i] | neighbours[j]) - {i, j})
        for m in neighbours[k]:
            neighbours[m] -= {i, j}
            neighbours[m].add(k)
            heapq.heappush(heap, (-similarity(m, k), m, k))
    return np.stack(members)


def _contrast(
    members: np.ndarray, labels: np.ndarray, lab: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per region: its area and its colour contrast with the surrounding superpixels."""
    n = labels.max() + 1
    stats = _superpixel_stats(labels, lab, n)
    weights = members.astype(np.float64)
    size = weights @ stats["size"]
    mean = (weights @ stats["sum"]) / size[:, None]
    spread = np.sqrt(np.maximum((weights @ stats["square"]) / size[:, None] - mean**2, 0)).mean(1)
    ring = ((weights @ _adjacency(labels, n).astype(np.float64)) > 0) & ~members
    ring_size = ring.astype(np.float64) @ stats["size"]
    ring_mean = (ring.astype(np.float64) @ stats["sum"]) / np.maximum(ring_size, 1)[:, None]
    distance = np.linalg.norm(mean - ring_mean, axis=1)
    distance[ring_size == 0] = 0.0
    return size, distance / (spread + 5.0)


def embedded_proposals(
    image: np.ndarray, params: EmbeddedParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mask proposals of one RGB image (H, W, 3) uint8.

    Returns:
        (masks (P, H, W) bool, scores (P,)) with P <= top_n, best first.
    """
    params = params or EmbeddedParams()
    height, width = image.shape[:2]
    lab = rgb2lab(image)
    min_size = max(1, round(params.min_size * height * width / 128**2))
    hierarchies, areas, scores = [], [], []
    for scale in params.scales:
        labels = felzenszwalb(image, scale=scale, sigma=params.sigma, min_size=min_size)
        members = merge_hierarchy(labels, lab)
        area, score = _contrast(members, labels, lab)
        hierarchies.append((labels, members))
        areas.append(area)
        scores.append(score)
    which = np.concatenate([np.full(len(a), h) for h, a in enumerate(areas)])
    index = np.concatenate([np.arange(len(a)) for a in areas])
    area = np.concatenate(areas) / (height * width)
    score = np.concatenate(scores)
    valid = (area >= params.min_area) & (area < params.max_area)
    order = [i for i in np.argsort(-score, kind="stable") if valid[i]]
    kept: list[np.ndarray] = []
    kept_scores: list[float] = []
    for i in order:
        labels, members = hierarchies[which[i]]
        mask = members[index[i]][labels]
        if kept and mask_iou(mask[None], np.stack(kept)).max() > params.dedup_iou:
            continue
        kept.append(mask)
        kept_scores.append(float(score[i]))
        if len(kept) == params.top_n:
            break
    if not kept:
        return np.zeros((0, height, width), dtype=bool), np.zeros(0)
    return np.stack(kept), np.asarray(kept_scores)
