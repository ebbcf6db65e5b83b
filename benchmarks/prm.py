"""PRM extraction against the original code's algorithm, side by side in one process.

The baseline is written the way the original PRM code (ZhouYanzhao/PRM, pytorch branch)
computes peak backpropagation: every `nn.Conv2d` forward becomes an identity "pre hook"
on its input (whose backward multiplies by the min-shifted input), the ordinary response
(detached), and the normaliser Z = conv(input - min, relu(W)) with W+ detached, through a
"post hook" whose backward divides by Z; autograd differentiates the conv that makes Z.
One forward, then one backward per peak with `retain_graph`, reading the input's grad.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.timing import interleaved
from prm_bench.model.backbones import build_classifier
from prm_bench.model.backprop import peak_response_maps
from prm_bench.model.peaks import find_peaks, upsample_maps


class _PreHook(torch.autograd.Function):
    """Identity forward; backward multiplies the signal by the min-shifted input."""

    @staticmethod
    def forward(ctx, x, offset):  # type: ignore[override]
        ctx.save_for_backward(x, offset)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, offset = ctx.saved_tensors
        return (x - offset) * grad, None


class _PostHook(torch.autograd.Function):
    """Returns the response; backward sends signal / Z to the normaliser Z (0 where Z
    is below 1e-10), as the original does."""

    @staticmethod
    def forward(ctx, response, z):  # type: ignore[override]
        ctx.save_for_backward(z)
        return response.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        spread = grad / (z.abs() + 1e-10)
        spread[z < 1e-10] = 0
        return None, spread


def _excitation_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    offset = x.min().detach()
    x = _PreHook.apply(x, offset)
    args = (self.stride, self.padding, self.dilation, self.groups)
    response = F.conv2d(x, self.weight, self.bias, *args).detach()
    z = F.conv2d(x - offset, F.relu(self.weight).detach(), None, *args)
    return _PostHook.apply(response, z)


@contextlib.contextmanager
def original_rule(model: nn.Module) -> Iterator[None]:
    """Patch every conv of `model` with the original code's forward for the block."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        conv.forward = MethodType(_excitation_forward, conv)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for conv in convs:
            conv.__dict__.pop("forward", None)


def original_prms(
    model: nn.Module, image: torch.Tensor, peaks: torch.Tensor, upsample: int
) -> torch.Tensor:
    """PRMs (K, H, W) as the original computes them: one forward, a backward per peak,
    reading the grad of the network's input, which its data loader had normalised (our
    classifier normalises itself: the original's network starts after that)."""
    model.eval()
    with original_rule(model), torch.enable_grad():
        x = model.normalisation(image).detach().requires_grad_(True)
        (features,) = model.trunk(x)
        maps = upsample_maps(model.classifier(features), upsample)
        signal = torch.zeros_like(maps)
        prms = []
        for _, cls, y, px in peaks.tolist():
            signal.zero_()
            signal[0, cls, y, px] = 1.0
            if x.grad is not None:
                x.grad.zero_()
            maps.backward(signal, retain_graph=True)
            prms.append(x.grad.detach().sum(1).clamp(min=0))
    out = torch.cat(prms)
    return out / out.sum(dim=(1, 2), keepdim=True).clamp(min=torch.finfo(out.dtype).tiny)


def bench_prm_against_original(
    device: torch.device, backbone: str, size: int, peaks: int, upsample: int, repeats: int
) -> dict:
    """Seconds of the original's algorithm, prm-bench sequential and batched, and the
    largest difference of their PRMs (all on the same model, image and peaks), timed
    `interleaved`."""
    torch.manual_seed(0)
    model = build_classifier(backbone, 20).to(device).eval()
    image = torch.rand(1, 3, size, size, device=device)  # RGB in 0..1: the model normalises
    with torch.no_grad():
        maps = upsample_maps(model(image), upsample)
    found = find_peaks(maps, peak_filter="none")
    chosen = found[torch.randperm(len(found))[:peaks]].to(device)
    variants = {
        "original": lambda: original_prms(model, image, chosen, upsample),
        "sequential": lambda: peak_response_maps(
            model, image, chosen, upsample=upsample, strategy="sequential"
        ),
        # the default: the device's chunk (1 signal per backward on CPU, 32 on GPU)
        "batched": lambda: peak_response_maps(model, image, chosen, upsample=upsample),
        # every peak in one backward, whatever the device
        "batched-all": lambda: peak_response_maps(
            model, image, chosen, upsample=upsample, chunk_size=len(chosen)
        ),
    }
    seconds = interleaved(variants, repeats, device)
    reference = variants["original"]()
    differences = {
        name: float((variants[name]() - reference).abs().max())
        for name in ("sequential", "batched", "batched-all")
    }
    return {
        "backbone": backbone,
        "image_size": size,
        "peaks": len(chosen),
        "upsample": upsample,
        "seconds": seconds,
        "speedup_sequential_over_original": seconds["original"] / seconds["sequential"],
        "speedup_batched_over_original": seconds["original"] / seconds["batched"],
        "speedup_batched_over_sequential": seconds["sequential"] / seconds["batched"],
        "speedup_batched_all_over_sequential": seconds["sequential"] / seconds["batched-all"],
        "max_abs_difference_to_original": differences,
    }
