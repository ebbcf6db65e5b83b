"""Peak finding and peak stimulation (DESIGN 2.2-2.3).

A peak of a class response map is a cell that holds the maximum of the r x r window
centred on it; on a tie only the first cell of the window in row-major order counts,
which is the cell max-pooling's argmax would pick. Peaks below a per-map threshold
(median by default) are filtered out. The stimulation registry (declared in
`model.catalogue`, implemented here) turns class response maps into class scores; `peak`
is the paper's peak stimulation.

Paper: Zhou et al., "Weakly Supervised Instance Segmentation using Class Peak Response",
CVPR 2018, https://arxiv.org/abs/1804.00880
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from prm_bench.model.catalogue import STIMULATIONS

PeakFilter = Literal["median", "mean", "max", "none"] | float


def upsample_maps(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinearly upsample (align_corners=True) maps (B, C, h, w) by an integer factor.

    This is the sub-pixel peak locating of the original code; factor 1 returns `maps`.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"upsample factor must be an integer >= 1, got {factor!r}")
    if factor == 1:
        return maps
    size = (maps.shape[-2] * factor, maps.shape[-1] * factor)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)


def local_maxima(maps: torch.Tensor, win_size: int = 3) -> torch.Tensor:
    """Boolean mask (B, C, h, w) of the cells that are the argmax of their window.

    Borders are padded with -inf. A cell is a local maximum when it is >= every cell of
    its window and > every cell that comes before it in row-major order, i.e. exactly
    when max-pooling with `return_indices=True` would return its own index.
    """
    if not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 1, got {win_size!r}")
    if maps.dim() != 4:
        raise ValueError(f"expected maps of shape (B, C, h, w), got {tuple(maps.shape)}")
    r = win_size // 2
    h, w = maps.shape[-2:]
    padded = F.pad(maps, (r, r, r, r), value=float("-inf"))
    mask = torch.ones_like(maps, dtype=torch.bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[..., r + dy : r + dy + h, r + dx : r + dx + w]
            before = dy < 0 or (dy == 0 and dx < 0)
            mask &= maps > neighbour if before else maps >= neighbour
    return mask


def peak_thresholds(maps: torch.Tensor, peak_filter: PeakFilter = "median") -> torch.Tensor:
    """Per-map threshold (B, C, 1, 1) below which peaks are dropped.

    `median` is torch's lower median, `mean` and `max` the map's mean and maximum, a
    number is a fixed threshold and `none` keeps every peak.
    """
    flat = maps.flatten(2)
    if isinstance(peak_filter, bool):
        raise ValueError(f"peak_filter must be a name or a number, got {peak_filter!r}")
    if isinstance(peak_filter, (int, float)):
        return torch.full_like(flat[..., :1], float(peak_filter)).unsqueeze(-1)
    if peak_filter == "median":
        value = flat.median(dim=-1).values
    elif peak_filter == "mean":
        value = flat.mean(dim=-1)
    elif peak_filter == "max":
        value = flat.amax(dim=-1)
    elif peak_filter == "none":
        value = torch.full_like(flat[..., 0], float("-inf"))
    else:
        raise ValueError(
            f"unknown peak_filter {peak_filter!r} (choose median, mean, max, none or a number)"
        )
    return value[..., None, None]


def peak_mask(
    maps: torch.Tensor, win_size: int = 3, peak_filter: PeakFilter = "median"
) -> torch.Tensor:
    """Boolean mask (B, C, h, w) of the filtered peaks of `maps` (no upsampling)."""
    with torch.no_grad():
        return local_maxima(maps, win_size) & (maps >= peak_thresholds(maps, peak_filter))


def find_peaks(
    class_response_maps: torch.Tensor,
    win_size: int = 3,
    peak_filter: PeakFilter = "median",
    upsample: int = 1,
) -> torch.Tensor:
    """Locate the filtered peaks of class response maps.

    Args:
        class_response_maps: (B, C, h, w).
        win_size: odd window size r of the local-maximum test.
        peak_filter: `median`, `mean`, `max`, `none` or a fixed number.
        upsample: sub-pixel locating factor; coordinates are on the upsampled grid.

    Returns:
        LongTensor (N, 4) of (batch, class, y, x), rows in lexicographic order.
    """
    maps = upsample_maps(class_response_maps.detach(), upsample)
    return peak_mask(maps, win_size, peak_filter).nonzero()


def select_peaks(
    peaks: torch.Tensor,
    class_response_maps: torch.Tensor,
    class_scores: torch.Tensor,
    class_threshold: float = 0.0,
    peak_threshold: float = 30.0,
    upsample: int = 1,
    relative: bool = False,
) -> torch.Tensor:
    """Keep the peaks that are backpropagated into peak response maps (DESIGN 2.4).

    A peak (b, c, y, x) is kept when its class score `class_scores[b, c]` is at least
    `class_threshold` and its response (on the map upsampled by `upsample`, the grid the
    peaks were found on) is above `peak_threshold`; with `relative`, above
    `peak_threshold` times the maximum of its map. The original's absolute 30 means
    different things for maps trained with different stimulations (their scales differ
    several-fold), a share of each map's maximum compares like with like.

    Takes seven parameters: the peaks, the maps and scores they come from, and the
    filters of DESIGN 2.4 (class and peak thresholds, sub-pixel factor, relative mode).
    """
    if len(peaks) == 0:
        return peaks
    maps = upsample_maps(class_response_maps.detach(), upsample)
    b, c, y, x = peaks.unbind(1)
    threshold = peak_threshold * (maps.amax(dim=(2, 3))[b, c] if relative else 1.0)
    keep = (class_scores.detach()[b, c] >= class_threshold) & (maps[b, c, y, x] > threshold)
    return peaks[keep]


def strongest_peaks(
    peaks: torch.Tensor, class_response_maps: torch.Tensor, count: int, upsample: int = 1
) -> torch.Tensor:
    """The `count` peaks of highest response (ties: the earlier row), in their original
    row order; all of them when there are no more than `count`."""
    if len(peaks) <= count:
        return peaks
    values = upsample_maps(class_response_maps.detach(), upsample)[tuple(peaks.T)]
    keep = values.argsort(descending=True, stable=True)[:count]
    return peaks[keep.sort().values]


def _masked_mean(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of `maps` over `mask` per map, and the mean (0 where the mask is empty)."""
    total = (maps * mask).sum(dim=(2, 3))
    count = mask.sum(dim=(2, 3)).clamp(min=1)
    return total, total / count


@STIMULATIONS.register("peak")
def peak_stimulation(
    class_response_maps: torch.Tensor,
    *,
    win_size: int = 3,
    peak_filter: PeakFilter = "median",
    upsample: int = 1,
) -> torch.Tensor:
    """Class score = mean response at the filtered peaks (the paper's peak stimulation).

    The gradient reaches only the peaks, each getting 1/N^c of the score's gradient. A
    map with no surviving peak (possible with a fixed threshold) scores 0.
    """
    maps = upsample_maps(class_response_maps, upsample)
    _, mean = _masked_mean(maps, peak_mask(maps, win_size, peak_filter))
    return mean


@STIMULATIONS.register("peak-legacy")
def peak_stimulation_legacy(
    class_response_maps: torch.Tensor,
    *,
    win_size: int = 3,
    peak_filter: PeakFilter = "median",
    upsample: int = 1,
) -> torch.Tensor:
    """Peak stimulation with the original code's backward: no 1/N^c factor.

    The forward equals `peak`; each peak receives the full gradient of its class score,
    as the original implementation's hand-written backward did. Kept so the effect of
    that difference can be measured.
    """
    maps = upsample_maps(class_response_maps, upsample)
    total, mean = _masked_mean(maps, peak_mask(maps, win_size, peak_filter))
    # Value of the mean, gradient of the sum: each peak gets dL/ds^c undivided.
    return mean.detach() + (total - total.detach())


@STIMULATIONS.register("gap")
def global_average_pooling(class_response_maps: torch.Tensor) -> torch.Tensor:
    """Class score = mean of the whole map (CAM; the paper's "w/o peak stimulation")."""
    return class_response_maps.mean(dim=(2, 3))


@STIMULATIONS.register("gmp")
def global_max_pooling(class_response_maps: torch.Tensor) -> torch.Tensor:
    """Class score = maximum of the map (DeepMIL)."""
    return class_response_maps.amax(dim=(2, 3))


def _count(k: int | float, n: int, name: str) -> int:
    if isinstance(k, bool) or k < 0:
        raise ValueError(f"{name} must be >= 0 (a count, or a fraction in (0, 1)), got {k!r}")
    if isinstance(k, float) and 0 < k < 1:
        return max(1, round(k * n))
    if int(k) != k or k > n:
        raise ValueError(f"{name}={k!r} must be an integer count <= {n} or a fraction in (0, 1)")
    return int(k)


@STIMULATIONS.register("maxmin")
def wildcat_pooling(
    class_response_maps: torch.Tensor,
    *,
    kmax: int | float = 1,
    kmin: int | float | None = None,
    alpha: float = 0.7,
) -> torch.Tensor:
    """WILDCAT max-min pooling: mean of the top-kmax cells + alpha * mean of the bottom-kmin.

    `kmax` and `kmin` are counts, or fractions of the map's cells when in (0, 1); `kmin`
    defaults to `kmax`, and 0 drops the min term. Durand et al., CVPR 2017.
    """
    flat = class_response_maps.flatten(2)
    n = flat.shape[-1]
    k_top = _count(kmax, n, "kmax")
    if k_top == 0:
        raise ValueError("kmax must select at least one cell")
    k_bottom = _count(kmax if kmin is None else kmin, n, "kmin")
    score = flat.topk(k_top, dim=-1).values.mean(dim=-1)
    if k_bottom and alpha:
        score = score + alpha * flat.topk(k_bottom, dim=-1, largest=False).values.mean(dim=-1)
    return score


def class_scores(
    class_response_maps: torch.Tensor, stimulation: str = "peak", **options: object
) -> torch.Tensor:
    """Aggregate class response maps (B, C, h, w) into class scores (B, C) with a
    registered stimulation and its options."""
    return STIMULATIONS.get(stimulation)(class_response_maps, **options)
