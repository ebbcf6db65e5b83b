"""Peak backpropagation: from a peak of a class response map to a peak response map
(DESIGN 2.4).

During the PRM pass every `nn.Conv2d` passes the top-down signal with the excitation
rule (`model.excitation`) instead of its gradient. The rule is linear in the starting
signal, so the PRMs of all peaks of an image come from one forward pass of the image,
then backwards that carry the one-hot signals as a batch (`torch.autograd.grad` with
`is_grads_batched`): nothing of the forward is replicated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prm_bench.model.backbones import InputNormalisation
from prm_bench.model.excitation import excitation_backprop
from prm_bench.model.memory import default_chunk, tally_memory
from prm_bench.model.peaks import upsample_maps

Strategy = Literal["batched", "sequential"]

__all__ = ["excitation_backprop", "peak_response_maps", "resize_prms"]


@contextlib.contextmanager
def _evaluation(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block and restore each flag after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _normalise(signal: torch.Tensor) -> torch.Tensor:
    """Image signal (K, 3, H, W) -> PRMs (K, H, W): channel sum, clamp at 0, sum to 1."""
    prms = signal.sum(dim=1).clamp(min=0)
    total = prms.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, prms / total.clamp(min=torch.finfo(prms.dtype).tiny), prms)


def resize_prms(prms: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """PRMs (K, H, W) bilinearly resized to `size`, clamped at 0 and renormalised to sum 1
    (e.g. from the network's input size to the image's own)."""
    prms = torch.as_tensor(prms)
    if tuple(prms.shape[-2:]) == tuple(size):
        return prms
    if not len(prms):
        return prms.new_zeros((0, *size))
    resized = F.interpolate(prms[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    resized = resized.clamp(min=0)
    total = resized.sum(dim=(1, 2), keepdim=True)
    return torch.where(
        total > 0, resized / total.clamp(min=torch.finfo(resized.dtype).tiny), resized
    )


def _one_hot(maps: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """One signal per peak: (K, C, h, w) with a 1 at peak k in row k."""
    k, c, h, w = len(peaks), *maps.shape[1:]
    _, cls, y, x = peaks.unbind(1)
    if (cls >= c).any() or (y >= h).any() or (x >= w).any() or (peaks < 0).any():
        raise ValueError(
            f"peaks must index the class response maps of shape (C, h, w) = {(c, h, w)}; "
            "were they found with another upsample factor?"
        )
    seeds = maps.new_zeros((k, c, h, w))
    seeds[torch.arange(k, device=maps.device), cls, y, x] = 1.0
    return seeds


def peak_response_maps(
    model: nn.Module,
    image: torch.Tensor,
    peaks: torch.Tensor,
    *,
    upsample: int = 1,
    strategy: Strategy = "batched",
    chunk_size: int | None = None,
    max_memory_mb: float | None = None,
) -> torch.Tensor:
    """Back-propagate each peak of one image into a peak response map.

    Args:
        model: maps images (B, 3, H, W) to class response maps (B, C, h, w); any module
            built from `nn.Conv2d` layers (it may upsample its maps itself).
        image: (1, 3, H, W), on the model's device.
        peaks: (K, 4) rows (batch, class, y, x) from `find_peaks`; y, x index the model's
            maps upsampled by `upsample`.
        upsample: the sub-pixel factor the peaks were found with.
        strategy: `batched` (default): one forward of the image, then backwards that
            carry `chunk_size` one-hot signals each as a batch; `sequential`: one
            forward, then one backward per peak, as the original code did.
        chunk_size: signals per backward of `batched`; by default `DEFAULT_CHUNK` of the
            device (1 on CPU, where `batched` is then the sequential loop; 32 on GPU).
        max_memory_mb: a budget for the pass's working memory: the chunk shrinks until
            the forward's graph plus the signals in flight fit (`model.memory`).

    Returns:
        (K, H, W) maps, each >= 0 and summing to 1 (all zero if no signal arrives).

    Takes seven parameters: the model, image and peaks of the rule, the sub-pixel
    factor, and three speed knobs (strategy, chunk size, memory budget) that change no
    result.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image of shape (1, 3, H, W), got {tuple(image.shape)}")
    if peaks.dim() != 2 or peaks.shape[1] != 4:
        raise ValueError(f"expected peaks of shape (K, 4), got {tuple(peaks.shape)}")
    if strategy not in ("batched", "sequential"):
        raise ValueError(f"unknown strategy {strategy!r} (choose batched or sequential)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = 1 if strategy == "sequential" else (chunk_size or default_chunk(image.device))
    single = _input_leaf(model, image)
    if len(peaks) == 0:
        return single.new_zeros((0, *single.shape[-2:]))
    with torch.enable_grad(), _evaluation(model), excitation_backprop(model):
        single.requires_grad_(True)
        with tally_memory(model) as tally:
            maps = upsample_maps(model(single), upsample)
        if max_memory_mb is not None:
            chunk_size = tally.chunk(single, max_memory_mb, chunk_size)
        chunks = _one_hot(maps, peaks.to(image.device)).split(chunk_size)
        prms = [  # normalised per chunk: only (k, H, W) of each chunk is kept
            _normalise(_signal(maps, single, chunk, retain=i < len(chunks) - 1))
            for i, chunk in enumerate(chunks)
        ]
    return torch.cat(prms)


def _input_leaf(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The floating tensor the signal is read at: a uint8 image in 0..1 as the model's
    `InputNormalisation` makes it (the signal passes that back unscaled), else a copy."""
    norms = [m for m in model.modules() if isinstance(m, InputNormalisation)]
    if image.dtype == torch.uint8 and norms:
        return norms[0].unit(image.detach())
    return image.detach().clone()


def _signal(
    maps: torch.Tensor, image: torch.Tensor, seeds: torch.Tensor, retain: bool
) -> torch.Tensor:
    """The image signals (K, 3, H, W) of K one-hot seeds (K, C, h, w): one backward,
    batched over the seeds when there are several."""
    if len(seeds) == 1:
        return torch.autograd.grad(maps, image, seeds, retain_graph=retain)[0]
    batched = torch.autograd.grad(
        maps, image, seeds[:, None], retain_graph=retain, is_grads_batched=True
    )[0]
    return batched[:, 0]
