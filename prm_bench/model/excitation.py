"""The excitation rule of peak backpropagation (DESIGN 2.4), as a context in which a
model's convolutions pass the top-down signal with it.

With U a convolution's input, m = min(U), U' = U - m and W+ = relu(W),

    Z = conv(U', W+),    signal into U = U' * conv_transpose(g / Z, W+),

with g / Z taken as 0 where Z < 1e-10. All other layers keep their ordinary gradient, but
for the classifier's own input normalisation, which passes the signal back unscaled (the
original read PRMs at the normalised image its data loader made). relu(W) and the
backward's kernels are made once per weight, not once per image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from prm_bench.model.backbones import InputNormalisation

_Z_EPSILON = 1e-10


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _explicit_padding(
    padding: str | int | tuple[int, ...], weight: torch.Tensor, dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Padding as (left, right, top, bottom), resolving 'valid' and 'same' like torch."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for axis in (1, 0):  # F.pad order: width first
            total = dilation[axis] * (weight.shape[2 + axis] - 1)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    py, px = _pair(padding)  # type: ignore[arg-type]
    return (px, px, py, py)


class _ExcitationConv2d(torch.autograd.Function):
    """conv2d of one image whose backward is the excitation rule. The backward is
    vmap-able, so K signals can cross the batch-1 forward as one batched backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        """`F.conv2d` itself (the rule is in the backward). Takes seven parameters: conv2d's."""
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        x, weight, _, stride, padding, dilation, groups = inputs
        stride, dilation = _pair(stride), _pair(dilation)
        pads = _explicit_padding(padding, weight, dilation)
        positive, flipped = _kernels(weight, groups, stride)
        shifted = x - x.min()
        if isinstance(padding, str):  # 'same' may pad unevenly: pad explicitly
            z = F.conv2d(F.pad(shifted, pads), positive, None, stride, 0, dilation, groups)
        else:  # the conv pads itself (no padded copy of the input)
            z = F.conv2d(shifted, positive, None, stride, padding, dilation, groups)
        inv_z = z.reciprocal().masked_fill_(z < _Z_EPSILON, 0.0)  # z >= 0: 0 where z ~ 0
        ctx.save_for_backward(shifted, positive, inv_z, flipped)
        ctx.conv = (stride, dilation, groups, pads)

    @staticmethod
    def backward(ctx, signal):  # type: ignore[override]
        shifted, positive, inv_z, flipped = ctx.saved_tensors
        stride, dilation, groups, pads = ctx.conv
        spread = _transposed_conv(
            signal * inv_z, positive, flipped, shifted.shape, stride, dilation, groups, pads
        )
        return shifted * spread, None, None, None, None, None, None


# relu(W) and its flipped kernel per conv weight, made once per weight version (not once
# per image): the same forward of every image reuses them
_KERNELS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _kernels(
    weight: torch.Tensor, groups: int, stride: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(relu(W), the kernel of its stride-1 backward, None when strided), cached until
    the weight changes (in-place updates bump its version)."""
    stamp = (weight._version, weight.data_ptr(), weight.device, weight.dtype, groups, stride)
    cached = _KERNELS.get(weight)
    if cached is None or cached[0] != stamp:
        with torch.no_grad():
            positive = weight.detach().clamp(min=0)
            flipped = _flipped(positive, groups) if stride == (1, 1) else None
        cached = _KERNELS[weight] = (stamp, positive, flipped)
    return cached[1], cached[2]


def _flipped(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A conv kernel (O, C/g, kh, kw) flipped in space with its in/out channels swapped
    per group: (C, O/g, kh, kw), the kernel of the transposed conv as a plain conv."""
    out_channels, in_per_group, k_h, k_w = weight.shape
    return (
        weight.flip(2, 3)
        .reshape(groups, out_channels // groups, in_per_group, k_h, k_w)
        .transpose(1, 2)
        .reshape(in_per_group * groups, out_channels // groups, k_h, k_w)
        .contiguous()  # a strided kernel would be copied again by every conv call
    )


def _transposed_conv(
    signal: torch.Tensor,
    weight: torch.Tensor,
    flipped: torch.Tensor | None,
    input_shape: torch.Size,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    pads: tuple[int, int, int, int],
) -> torch.Tensor:
    """The transposed convolution of `signal` by `weight`, cropped to the unpadded input
    (N, C, H, W) of a conv with explicit `pads` (left, right, top, bottom); `flipped` is
    `_flipped(weight, groups)` at stride 1 (None when strided).

    At stride 1 it is a plain convolution of the signal, padded by the kernel's reach
    less the forward padding, with the kernel flipped and its in/out channels swapped
    per group: CPUs run that forward kernel much faster than a transposed one
    (depthwise convolutions especially). Strided convolutions use `conv_transpose2d`.

    Takes eight parameters: the signal, the kernel and its flipped copy, and the
    geometry of the forward convolution (input shape, stride, dilation, groups,
    padding).
    """
    left, right, top, bottom = pads
    (h, w), (k_h, k_w) = input_shape[2:], weight.shape[2:]
    reach_y, reach_x = dilation[0] * (k_h - 1), dilation[1] * (k_w - 1)
    grow = (reach_x - left, reach_x - right, reach_y - top, reach_y - bottom)
    if flipped is not None and min(grow) >= 0:
        if grow[0] == grow[1] and grow[2] == grow[3]:  # the conv pads itself, no copy
            return F.conv2d(signal, flipped, None, 1, (grow[2], grow[0]), dilation, groups)
        return F.conv2d(F.pad(signal, grow), flipped, None, 1, 0, dilation, groups)
    # strided: the transposed conv onto the input's size (output_padding makes up the rows
    # and columns the forward's stride skipped); the conv's own padding where it is even
    # on both sides (a padding-0 transposed conv cropped after can be 4x slower on CPU),
    # else onto the explicitly padded size, then cropped
    even = left == right and top == bottom
    target = (h, w) if even else (h + top + bottom, w + left + right)
    crop = (top, left) if even else (0, 0)
    reach = (reach_y + 1, reach_x + 1)
    extra = [
        target[axis] + 2 * crop[axis] - ((signal.shape[2 + axis] - 1) * stride[axis] + reach[axis])
        for axis in (0, 1)
    ]
    spread = F.conv_transpose2d(signal, weight, None, stride, crop, extra, groups, dilation)
    if even or not any(pads):
        return spread
    return F.pad(spread, (-left, -right, -top, -bottom))  # a crop (and vmap-able)


def _conv_arguments(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """`F.conv2d`'s arguments, defaults filled in. Takes seven parameters: conv2d's."""
    return input, weight, bias, stride, padding, dilation, groups


class _Unscaled(torch.autograd.Function):
    """(images - mean) / std forward; backward passes the signal unscaled, so the signal
    read at the images is the one at the normalised tensor (the original code's network
    input: its data loader normalised, so its PRMs carry no 1/std per channel)."""

    @staticmethod
    def forward(ctx, images, mean, std):  # type: ignore[override]
        return (images - mean) / std

    @staticmethod
    def backward(ctx, signal):  # type: ignore[override]
        return signal, None, None


class _ExcitationMode(TorchFunctionMode):
    """Routes conv2d calls to the excitation rule; everything else passes through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            return _ExcitationConv2d.apply(*_conv_arguments(*args, **kwargs))
        return func(*args, **kwargs)


@contextlib.contextmanager
def excitation_backprop(model: nn.Module) -> Iterator[None]:
    """Within the block, every `nn.Conv2d` of `model` backpropagates with the
    excitation rule (for a forward of one image: the shift is by the input's minimum).

    The model is restored on exit, also when the block raises: its convolutions get
    their own `forward` back and nothing is left attached.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d layer: peak backpropagation "
            "replaces the backward of convolutions and needs a convolutional network"
        )
    norms = [m for m in model.modules() if isinstance(m, InputNormalisation)]
    patched = convs + norms
    previous = [module.__dict__.get("forward") for module in patched]
    for conv in convs:
        original = conv.forward

        def forward(*args: torch.Tensor, _original=original) -> torch.Tensor:
            with _ExcitationMode():
                return _original(*args)

        conv.forward = forward  # type: ignore[method-assign]
    for norm in norms:

        def normalise(images: torch.Tensor, _norm=norm) -> torch.Tensor:
            return _Unscaled.apply(_norm.unit(images), _norm.mean, _norm.std)

        norm.forward = normalise  # type: ignore[method-assign]
    try:
        yield
    finally:
        for conv, before in zip(patched, previous, strict=True):
            if before is None:
                conv.__dict__.pop("forward", None)
            else:
                conv.forward = before  # type: ignore[method-assign]
