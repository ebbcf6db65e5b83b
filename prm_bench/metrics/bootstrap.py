"""Confidence intervals for claims: a paired, two-level bootstrap over training seeds and
evaluation images (DESIGN 3, Uncertainty).

The evaluate stage stores, beside each cell's metrics, per-image statistics from which a
metric can be recomputed on any resample of the images (`prm_bench.metrics.ap`):

- `<metric>/image`, `/label`, `/score`, `/hit`, `/positives`: ranked hits (mAP@t,
  pointing_mAP), whose AP is recomputed per class;
- `<metric>/num`, `<metric>/den`: a ratio of per-image sums (prm_correct, abo);
- `<metric>/confusion`: per-image confusion matrices (mIoU).

A claim compares two rows ("better" and "worse") that each have one cell per seed. One
resample draws the seeds with replacement, then, for every drawn seed, the images with
replacement; both sides are recomputed on the same draw, so the CI is of the paired
difference and covers both the seed-to-seed and the image-to-image variation. With one
seed only the images are resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prm_bench.metrics.ap import RankedHits, nan_mean
from prm_bench.metrics.semantic import class_ious

Statistics = dict[str, np.ndarray]
Verdict = Literal["holds", "contradicted", "inconclusive"]


def supports(stats: Statistics, metric: str) -> bool:
    """Whether `stats` can recompute `metric` on resampled images."""
    return any(f"{metric}/{part}" in stats for part in ("image", "num", "confusion"))


def image_count(stats: Statistics) -> int:
    """The number of evaluation images the statistics describe."""
    for key, value in stats.items():
        if key.endswith(("/positives", "/confusion")):
            return len(value)
        if key.endswith("/num"):
            return len(value)
    raise ValueError("the statistics hold no per-image arrays")


def metric_samples(stats: Statistics, metric: str, weights: np.ndarray) -> np.ndarray:
    """`metric` recomputed for each row of image weights (B, N); returns (B,).

    Raises:
        KeyError: `stats` has no per-image statistics of `metric`.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if f"{metric}/image" in stats:
        hits = RankedHits.from_arrays(stats, metric)
        use_07 = bool(stats.get(f"{metric}/use_07_metric", False))
        return nan_mean(hits.class_aps(weights, use_07), axis=1)
    if f"{metric}/num" in stats:
        num = weights @ stats[f"{metric}/num"]
        den = weights @ stats[f"{metric}/den"]
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    if f"{metric}/confusion" in stats:
        confusion = np.tensordot(weights, stats[f"{metric}/confusion"], axes=(1, 0))
        return nan_mean(class_ious(confusion), axis=1)
    raise KeyError(f"no per-image statistics of {metric!r}")


ZERO = 1e-9  # metrics are shares in [0, 1]: a difference below this is rounding


@dataclass(frozen=True)
class Interval:
    """A measured difference (better minus worse) and its bootstrap CI."""

    effect: float
    low: float
    high: float
    resamples: int
    level: float
    method: str
    # two-sided bootstrap p-value of "no effect": twice the smaller tail share at 0
    p_value: float = 1.0
    # with several seeds: the spread of the per-seed effects, and the CI of the images
    # alone (seeds held fixed), which measure different things and are reported apart
    seed_sd: float | None = None
    image_low: float | None = None
    image_high: float | None = None

    def magnitude(self, paper: float | None) -> str:
        """Whether the paper's effect (a share, like the interval) lies in the CI:
        `agrees`, or the measured effect is `smaller` / `larger`; "" without one."""
        if paper is None:
            return ""
        if self.low - ZERO <= paper <= self.high + ZERO:
            return "agrees"
        return "smaller" if self.high < paper else "larger"

    def verdict(self, expected_sign: int = 1) -> Verdict:
        """`holds` when the CI lies on the expected side of 0, `contradicted` when on
        the other side, `inconclusive` when it contains 0. A bound within `ZERO` of 0 is
        0: resamples where both sides tie differ by float rounding (-5e-17), not by an
        effect."""
        low, high = self.low * expected_sign, self.high * expected_sign
        if expected_sign < 0:
            low, high = high, low
        if low > ZERO:
            return "holds"
        if high < -ZERO:
            return "contradicted"
        return "inconclusive"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of a family of tests (same order): the k-th
    smallest is multiplied by (m - k + 1), made monotone, capped at 1."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _draw_effects(
    sides: tuple[Sequence[Statistics], Sequence[Statistics]],
    metric: str,
    rng: np.random.Generator,
    draws: int,
    n_images: int,
    resample_seeds: bool = True,
) -> np.ndarray:
    """`draws` bootstrap effects: each draws the seeds with replacement (or keeps every
    seed once, not `resample_seeds`), then the images with replacement for every drawn
    seed, and recomputes both sides on that draw.

    Takes six parameters: the two sides, the metric, the generator, the draw count, the
    image count and whether seeds are resampled."""
    better, worse = sides
    n_seeds = len(better)
    if n_seeds > 1 and resample_seeds:
        seeds = rng.integers(n_seeds, size=(draws, n_seeds))
    else:
        seeds = np.tile(np.arange(n_seeds), (draws, 1))
    counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), (draws, n_seeds))
    differences = np.zeros((draws, n_seeds))
    for s in range(n_seeds):
        chosen = seeds == s
        if chosen.any():
            weights = counts[chosen]
            differences[chosen] = metric_samples(better[s], metric, weights) - (
                metric_samples(worse[s], metric, weights)
            )
    return np.nanmean(differences, axis=1)


def paired_bootstrap(
    better: Sequence[Statistics],
    worse: Sequence[Statistics],
    metric: str,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 250,
) -> Interval:
    """Percentile CI of mean(metric of `better`) - mean(metric of `worse`).

    Args:
        better, worse: per-image statistics of each side, one entry per training seed,
            paired by position (seed i of one side with seed i of the other).
        metric: a metric both sides have statistics for (e.g. "mAP@0.5").
        resamples: bootstrap draws (>= 1,000 for a reported CI).
        seed: the generator's seed, so a report is reproducible.
        level: the CI's coverage.
        chunk: draws evaluated together (bounds memory).

    Returns:
        The point effect (full data, mean over seeds) and the CI.

    Takes seven parameters: the two sides and the metric, and four keyword knobs of the
    bootstrap itself, each with a default.
    """
    if len(better) != len(worse) or not better:
        raise ValueError(f"{len(better)} seeds on one side and {len(worse)} on the other")
    sizes = {image_count(s) for s in (*better, *worse)}
    if len(sizes) != 1:
        raise ValueError(f"the two sides were evaluated on different images ({sorted(sizes)})")
    (n_images,) = sizes
    n_seeds = len(better)
    ones = np.ones((1, n_images))
    point = np.mean(
        [
            metric_samples(b, metric, ones)[0] - metric_samples(w, metric, ones)[0]
            for b, w in zip(better, worse, strict=True)
        ]
    )
    rng = np.random.default_rng(seed)
    samples = np.concatenate([
        _draw_effects((better, worse), metric, rng, min(chunk, resamples - start), n_images)
        for start in range(0, resamples, chunk)
    ])  # fmt: skip
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
    two_level = "paired two-level bootstrap (seeds, then images)"
    method = two_level if n_seeds > 1 else "paired bootstrap over images (one seed)"
    spread = (
        _spread((better, worse), metric, rng, (resamples, chunk), tail)
        if n_seeds > 1
        else {"seed_sd": None, "image_low": None, "image_high": None}
    )
    return Interval(
        float(point), float(low), float(high), resamples, level, method,
        p_value=bootstrap_p_value(samples), **spread,
    )  # fmt: skip


def _spread(
    sides: tuple[Sequence[Statistics], Sequence[Statistics]],
    metric: str,
    rng: np.random.Generator,
    draws: tuple[int, int],
    tail: float,
) -> dict[str, float]:
    """With several seeds: the sd of the per-seed effects, and the CI of the images alone
    (every seed kept once per draw); `draws` is (resamples, chunk)."""
    better, worse = sides
    ones = np.ones((1, image_count(better[0])))
    per_seed = [
        metric_samples(b, metric, ones)[0] - metric_samples(w, metric, ones)[0]
        for b, w in zip(better, worse, strict=True)
    ]
    resamples, chunk = draws
    images = np.concatenate([
        _draw_effects(sides, metric, rng, min(chunk, resamples - start), ones.shape[1],
                      resample_seeds=False)
        for start in range(0, resamples, chunk)
    ])  # fmt: skip
    low, high = np.nanpercentile(images, [tail, 100.0 - tail])
    return {"seed_sd": float(np.std(per_seed, ddof=1)), "image_low": float(low),
            "image_high": float(high)}  # fmt: skip


def bootstrap_p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a zero effect, (count + 1) / (draws + 1) per tail."""
    samples = samples[np.isfinite(samples)]
    below = (np.sum(samples <= ZERO) + 1) / (len(samples) + 1)
    above = (np.sum(samples >= -ZERO) + 1) / (len(samples) + 1)
    return float(min(1.0, 2 * min(below, above)))
