"""Fully convolutional classifiers: a timm CNN trunk plus a 1x1 convolution (DESIGN 2.1).

The classifier returns class response maps (B, C, H / stride, W / stride); there is no
global pooling and no fully connected layer, so peaks keep their spatial position. The
paper's backbones are ResNet50 (layer4, stride 32) and VGG16 (conv5_3, stride 16).

Weights come from one of three places, kept apart from the architecture: random
initialisation, the timm hub (`pretrained=True`), or a local file (`weights=PATH`,
safetensors or a torch state dict, loaded with `weights_only=True`, never downloaded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import safetensors.torch
import timm
import torch
from torch import nn

from prm_bench.registry import Registry


class BackboneError(ValueError):
    """A backbone that cannot be built as asked (bad name, option or weight file)."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone entry builds, described as data.

    Attributes:
        name: the registry name.
        timm_name: the timm architecture name.
        out_index: which of timm's `feature_info` levels is the trunk output (-1: last).
        channels: channels of the trunk output (input channels of the 1x1 classifier).
        stride: input pixels per response-map cell.
        pretrained_tag: timm weight tag used when `pretrained=True` (paper fidelity:
            the torchvision ImageNet weights); None for timm's default.
        description: one line for `prm-bench list backbones`.
    """

    name: str
    timm_name: str
    out_index: int
    channels: int
    stride: int
    pretrained_tag: str | None = None
    description: str = ""


BACKBONES: Registry[BackboneSpec] = Registry(
    "backbone",
    """Backbones: each entry is a `BackboneSpec` whose trunk is a timm CNN cut at
    `out_index`, giving `channels` maps at `stride`; `build_classifier` turns it into a
    fully convolutional classifier. Any timm CNN is available as `timm:<name>`.""",
)

for _spec in (
    BackboneSpec("vgg16", "vgg16", 4, 512, 16, "vgg16.tv_in1k", "VGG16 at conv5_3 (paper)"),
    BackboneSpec("vgg16-pool5", "vgg16", 5, 512, 32, "vgg16.tv_in1k", "VGG16 at pool5"),
    BackboneSpec("vgg16_bn", "vgg16_bn", 4, 512, 16, "vgg16_bn.tv_in1k", "VGG16-BN at conv5_3"),
    BackboneSpec(
        "resnet50", "resnet50", 4, 2048, 32, "resnet50.tv_in1k", "ResNet50 layer4 (paper)"
    ),
    BackboneSpec("resnet18", "resnet18", 4, 512, 32, "resnet18.tv_in1k", "ResNet18 layer4"),
    BackboneSpec("resnet10t", "resnet10t", 4, 512, 32, None, "ResNet10-T layer4 (small)"),
    BackboneSpec("test_resnet", "test_resnet", 4, 96, 32, None, "timm's tiny test ResNet"),
):
    BACKBONES.add(_spec.name, _spec)

# Layers whose presence means the trunk is not a plain CNN: the excitation rule of peak
# backpropagation is defined for convolutions, and token mixing has no such rule.
_NON_CONVOLUTIONAL = (nn.Linear, nn.MultiheadAttention)


@functools.cache
def _timm_spec(timm_name: str) -> BackboneSpec:
    if timm_name not in timm.list_models():
        close = timm.list_models(f"*{timm_name}*")[:5]
        hint = f"; close timm names: {', '.join(close)}" if close else ""
        raise BackboneError(f"unknown timm model {timm_name!r}{hint}")
    trunk = timm.create_model(timm_name, pretrained=False, features_only=True, out_indices=(-1,))
    _check_convolutional(trunk, f"timm:{timm_name}")
    info = trunk.feature_info
    return BackboneSpec(
        name=f"timm:{timm_name}",
        timm_name=timm_name,
        out_index=-1,
        channels=info.channels()[-1],
        stride=info.reduction()[-1],
        description=f"timm {timm_name}, last feature level",
    )


BACKBONES.add_prefix("timm:", _timm_spec)


def _check_convolutional(trunk: nn.Module, name: str) -> None:
    for module in trunk.modules():
        if isinstance(module, _NON_CONVOLUTIONAL) or "Attention" in type(module).__name__:
            raise BackboneError(
                f"backbone {name!r} contains {type(module).__name__} layers: peak "
                "backpropagation is defined for convolutional networks (Conv2d trunks), "
                "choose a CNN such as resnet50 or vgg16"
            )


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec of a registered backbone or of `timm:<name>`."""
    return BACKBONES.get(name)


class FullyConvClassifier(nn.Module):
    """A CNN trunk and a 1x1 convolution giving class response maps.

    Args:
        trunk: module mapping images (B, 3, H, W) to a list holding one feature map.
        channels: channels of that feature map.
        num_classes: number of classes C.
        spec: the backbone description (kept for stride and provenance).
    """

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int, spec: BackboneSpec):
        super().__init__()
        self.trunk = trunk
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=True)
        self.spec = spec
        self.num_classes = num_classes

    @property
    def stride(self) -> int:
        """Input pixels per response-map cell."""
        return self.spec.stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (B, 3, H, W) to class response maps (B, C, h, w)."""
        (features,) = self.trunk(images)
        return self.classifier(features)


def build_classifier(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    output_stride: int | None = None,
) -> FullyConvClassifier:
    """Build the fully convolutional classifier of backbone `name`.

    Args:
        name: a registered backbone or `timm:<name>`.
        num_classes: number of classes C of the 1x1 classifier.
        pretrained: load timm hub weights (network needed; never used by tests).
        weights: a local safetensors or torch state-dict file of the timm classifier
            (e.g. torchvision ImageNet weights) to initialise the trunk from.
        output_stride: 8 or 16 for dilated ResNets; None keeps the native stride.

    Returns:
        The classifier; its trunk is in training mode like any new module.
    """
    spec = get_backbone(name)
    if num_classes < 1:
        raise BackboneError(f"num_classes must be >= 1, got {num_classes}")
    if pretrained and weights is not None:
        raise BackboneError("give either pretrained=True or weights=PATH, not both")
    kwargs: dict = {"features_only": True, "out_indices": (spec.out_index,)}
    if output_stride is not None and output_stride != spec.stride:
        if output_stride not in (8, 16) or not spec.timm_name.startswith(("resnet", "test_resnet")):
            raise BackboneError(
                f"output_stride={output_stride} is not available for {name!r}: "
                "ResNet backbones accept 8 or 16"
            )
        kwargs["output_stride"] = output_stride
        spec = replace(spec, stride=output_stride)
    model_name = spec.timm_name
    if pretrained and spec.pretrained_tag:
        model_name = spec.pretrained_tag
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise BackboneError(f"weights file {path} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        trunk = timm.create_model(
            model_name, pretrained=pretrained or weights is not None, **kwargs
        )
    except RuntimeError as err:
        if weights is None:
            raise
        first = str(err).splitlines()[:3]
        raise BackboneError(
            f"weights file {weights} does not fit backbone {name!r} "
            f"(expected a state dict of timm/torchvision {spec.timm_name}): {' '.join(first)}"
        ) from err
    _check_convolutional(trunk, name)
    return FullyConvClassifier(trunk, spec.channels, num_classes, spec)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a torch state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Save a model's state dict as safetensors (written whole to `path`)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint written by `save_checkpoint` (or a torch state dict) into `model`."""
    model.load_state_dict(load_state_dict_file(path))
    return model
