"""Timing helpers the benchmarks share: one synchronised call, the median of repeats, and
variants timed in turns."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def seconds_of(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of `fn`, waiting for the device's queued work on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = sorted(seconds_of(fn, device) for _ in range(repeats))
    return times[len(times) // 2]


def interleaved(
    variants: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Best-of-`repeats` seconds of each variant, the variants taking turns in every
    round (after one warm-up call each), so a slow spell of a shared machine hits them
    alike instead of whichever ran during it."""
    for fn in variants.values():
        fn()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, fn in variants.items():
            best[name] = min(best[name], seconds_of(fn, device))
    return best
