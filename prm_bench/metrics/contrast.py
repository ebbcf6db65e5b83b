"""Linear contrasts of several cells with a bootstrap CI, and the verdicts of the
reproduction-gap study: an effect that matters, one that is negligible within a stated
margin, and the check that single effects add up to the all-flipped one.

A contrast is sum_k w_k * metric(cell_k), each cell's metric the mean over its seeds. One
resample draws the seeds with replacement (the same seeds for every cell), then the
images with replacement for every drawn seed (the same images for every cell), exactly
as `bootstrap.paired_bootstrap` does for two cells with weights (+1, -1): the two give
the same interval on the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from prm_bench.metrics.bootstrap import (
    ZERO,
    Interval,
    Statistics,
    bootstrap_p_value,
    image_count,
    metric_samples,
)

GapVerdict = Literal["matters", "negligible", "inconclusive"]


def _contrast(
    cells: Sequence[Statistics], weights: np.ndarray, metric: str, rows: np.ndarray
) -> np.ndarray:
    """The contrast of one seed's cells for each row of image weights (B, N): (B,)."""
    return sum(
        w * metric_samples(cell, metric, rows) for w, cell in zip(weights, cells, strict=True)
    )


def contrast_point(
    cells: Sequence[Sequence[Statistics]], weights: Sequence[float], metric: str
) -> float:
    """sum_k weights[k] * mean-over-seeds metric(cells[k]) on the images as they are."""
    w = np.asarray(weights, dtype=np.float64)
    ones = np.ones((1, image_count(cells[0][0])))
    per_seed = [_contrast([c[s] for c in cells], w, metric, ones)[0] for s in range(len(cells[0]))]
    return float(np.mean(per_seed))


def contrast_bootstrap(
    cells: Sequence[Sequence[Statistics]],
    weights: Sequence[float],
    metric: str,
    resamples: int = 1000,
    seed: int = 0,
) -> Interval:
    """Percentile 95% CI of sum_k weights[k] * mean-over-seeds metric(cells[k]).

    Raises:
        ValueError: cells with other seed counts or images, or weights of another length.
    """
    if len(cells) != len(weights) or not cells:
        raise ValueError(f"{len(cells)} cells and {len(weights)} weights")
    n_seeds = {len(cell) for cell in cells}
    sizes = {image_count(s) for cell in cells for s in cell}
    if len(n_seeds) != 1 or len(sizes) != 1:
        raise ValueError("every cell needs the same seeds, evaluated on the same images")
    (n_seeds,), (n_images,) = n_seeds, sizes
    w = np.asarray(weights, dtype=np.float64)
    point = contrast_point(cells, weights, metric)
    rng = np.random.default_rng(seed)
    samples = []
    for start in range(0, resamples, 250):  # the chunks of paired_bootstrap: the same draws
        draws = min(250, resamples - start)
        if n_seeds > 1:
            seeds = rng.integers(n_seeds, size=(draws, n_seeds))
        else:
            seeds = np.zeros((draws, 1), dtype=np.int64)
        counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), (draws, n_seeds))
        values = np.zeros((draws, n_seeds))
        for s in range(n_seeds):
            chosen = seeds == s
            if chosen.any():
                values[chosen] = _contrast([c[s] for c in cells], w, metric, counts[chosen])
        samples.append(np.nanmean(values, axis=1))
    drawn = np.concatenate(samples)
    low, high = np.nanpercentile(drawn, [2.5, 97.5])
    method = f"bootstrap of a {len(cells)}-cell contrast (seeds, then images)"
    return Interval(float(point), float(low), float(high), resamples, 0.95, method,
                    p_value=bootstrap_p_value(drawn))  # fmt: skip


def gap_verdict(interval: Interval, margin: float) -> GapVerdict:
    """`matters` when the CI excludes 0; `negligible` when it lies within +-`margin` (an
    equivalence margin, a share like the interval); `inconclusive` otherwise."""
    if interval.low > ZERO or interval.high < -ZERO:
        return "matters"
    if -margin - ZERO <= interval.low and interval.high <= margin + ZERO:
        return "negligible"
    return "inconclusive"


def interaction(
    base: Sequence[Statistics],
    singles: Sequence[Sequence[Statistics]],
    flipped: Sequence[Statistics],
    metric: str,
    resamples: int = 1000,
) -> Interval:
    """How far the all-flipped effect is from the sum of the single effects:
    (flipped - base) - sum_i (single_i - base), with its CI; 0 inside the CI means the
    causes add up."""
    n = len(singles)
    cells = [flipped, base, *singles]
    return contrast_bootstrap(cells, [1.0, n - 1.0, *([-1.0] * n)], metric, resamples)
