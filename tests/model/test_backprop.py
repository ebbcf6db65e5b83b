import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from prm_bench.model.backbones import build_classifier
from prm_bench.model.backprop import excitation_backprop, peak_response_maps
from prm_bench.model.peaks import find_peaks


def line_net(first: list[float], second: list[float]) -> nn.Sequential:
    """1-channel, 1 x 3 input -> conv (1 x 2) -> ReLU -> conv (1 x 2) -> one 1 x 1 map."""
    net = nn.Sequential(nn.Conv2d(1, 1, (1, 2), bias=False), nn.ReLU(), nn.Conv2d(1, 1, (1, 2)))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(first).view(1, 1, 1, 2))
        net[2].weight.copy_(torch.tensor(second).view(1, 1, 1, 2))
        net[2].bias.fill_(0.5)
    return net


def test_prm_of_a_two_conv_network_matches_the_rule_by_hand():
    # x = [1, 2, 4]; conv1 [1, 1] -> [3, 6]; ReLU; conv2 [2, 1] -> one cell.
    # conv2: U' = [0, 3], W+ = [2, 1], Z = 3, g / Z = 1/3, spread [2/3, 1/3], signal [0, 1].
    # conv1: U' = [0, 1, 3], W+ = [1, 1], Z = [1, 4], g / Z = [0, 1/4],
    #        spread [0, 1/4, 1/4], signal [0, 1/4, 3/4] (already summing to 1).
    net = line_net([1.0, 1.0], [2.0, 1.0])
    image = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
    prm = peak_response_maps(net, image, torch.tensor([[0, 0, 0, 0]]))
    torch.testing.assert_close(prm, torch.tensor([[[0.0, 0.25, 0.75]]]))


def test_negative_weights_are_dropped_and_zero_z_passes_no_signal():
    # conv1 [2, -1] on x = [3, 2, 1] -> [4, 3]; conv2 [2, 1]: U' = [1, 0], Z = 2,
    # signal [1, 0]; conv1: U' = [2, 1, 0], W+ = [2, 0], Z = [4, 2], g / Z = [1/4, 0],
    # spread [1/2, 0, 0], signal [1, 0, 0].
    image = torch.tensor([3.0, 2.0, 1.0]).view(1, 1, 1, 3)
    prm = peak_response_maps(line_net([2.0, -1.0], [2.0, 1.0]), image, torch.tensor([[0, 0, 0, 0]]))
    torch.testing.assert_close(prm, torch.tensor([[[1.0, 0.0, 0.0]]]))
    # conv2 [-1, -1]: W+ = 0, so Z = 0 < 1e-10 and nothing reaches the image.
    prm = peak_response_maps(
        line_net([1.0, 1.0], [-1.0, -1.0]), image, torch.tensor([[0, 0, 0, 0]])
    )
    assert torch.equal(prm, torch.zeros(1, 1, 3))


def dense(conv: nn.Conv2d, weight: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of the linear map x -> conv(x) without bias, columns = input cells."""
    n = int(torch.tensor(shape).prod())
    basis = torch.eye(n, dtype=weight.dtype).view(n, *shape)
    with torch.no_grad():
        return conv._conv_forward(basis, weight, None).reshape(n, -1).T


def reference_prms(net: nn.Sequential, image: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """The rule of DESIGN 2.4 written with dense matrices, independent of the code."""
    inputs, x = [], image
    with torch.no_grad():
        for layer in net:
            inputs.append(x)
            x = layer(x)
    prms = []
    for _, c, y, xx in peaks.tolist():
        g = torch.zeros_like(x)
        g[0, c, y, xx] = 1.0
        g = g.flatten()
        for layer, u in zip(reversed(net), reversed(inputs), strict=True):
            if isinstance(layer, nn.ReLU):
                g = g * (u.flatten() > 0)
                continue
            positive = dense(layer, layer.weight.clamp(min=0), tuple(u.shape[1:]))
            shifted = u.flatten() - u.min()
            z = positive @ shifted
            ratio = torch.where(z < 1e-10, torch.zeros_like(z), g / z)
            g = shifted * (positive.T @ ratio)
        prm = g.view(image.shape[1:]).sum(0).clamp(min=0)
        prms.append(prm / prm.sum())
    return torch.stack(prms)


def mixed_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        nn.Conv2d(5, 4, 2, padding="same"),
        nn.ReLU(),
        nn.Conv2d(4, 2, 1),
    ).double()


def depthwise_net() -> nn.Sequential:
    """Depthwise-separable blocks, as EfficientNet and MobileNet have."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=3),
        nn.ReLU(),
        nn.Conv2d(6, 2, 1),
    ).double()


@pytest.mark.parametrize("strategy", ["batched", "sequential"])
@pytest.mark.parametrize("make_net", [mixed_net, depthwise_net])
def test_prms_equal_the_dense_reference_of_the_rule(strategy, make_net):
    net = make_net()
    image = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    peaks = torch.tensor([[0, 0, 1, 2], [0, 1, 3, 3], [0, 0, 0, 0]])
    prms = peak_response_maps(net, image, peaks, strategy=strategy, chunk_size=3)
    torch.testing.assert_close(prms, reference_prms(net, image, peaks), rtol=1e-9, atol=1e-12)


def some_peaks(model: nn.Module, image: torch.Tensor, k: int, upsample: int = 1) -> torch.Tensor:
    with torch.no_grad():
        maps = model.eval()(image)
    peaks = find_peaks(maps, peak_filter="none", upsample=upsample)
    return peaks[torch.randperm(len(peaks))[:k]]


class VggLike(nn.Module):
    """Convolutions followed by in-place ReLUs, BN and max-pooling, as VGG has."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def torchvision_resnet() -> nn.Module:
    trunk = torchvision.models.resnet18(weights=None)
    return nn.Sequential(*list(trunk.children())[:-2], nn.Conv2d(512, 4, 1))


MODELS = {
    "test_resnet": lambda: build_classifier("test_resnet", 3),
    "resnet10t": lambda: build_classifier("resnet10t", 3),
    "vgg-like": VggLike,
    "torchvision-resnet18": torchvision_resnet,
    # depthwise convolutions, TF "same" padding, dilation at output stride 16
    "efficientnet_lite0": lambda: build_classifier("efficientnet_lite0", 3, output_stride=16),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("upsample", [1, 4])
def test_batched_equals_one_peak_at_a_time(name, upsample):
    model = MODELS[name]()
    image = torch.randn(1, 3, 64, 64)
    peaks = some_peaks(model, image, 5, upsample)
    batched = peak_response_maps(model, image, peaks, upsample=upsample, chunk_size=len(peaks))
    chunked = peak_response_maps(model, image, peaks, upsample=upsample, chunk_size=2)
    default = peak_response_maps(model, image, peaks, upsample=upsample)  # 1 on CPU
    sequential = peak_response_maps(model, image, peaks, upsample=upsample, strategy="sequential")
    assert batched.shape == (len(peaks), 64, 64)
    torch.testing.assert_close(batched, sequential, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked, batched, rtol=0, atol=1e-6)
    torch.testing.assert_close(default, batched, rtol=0, atol=1e-6)
    assert (batched >= 0).all()
    torch.testing.assert_close(batched.sum(dim=(1, 2)), torch.ones(len(peaks)))


def test_cached_kernels_follow_the_weights_when_they_change():
    model = build_classifier("test_resnet", 3).eval()
    image = torch.randn(1, 3, 32, 32)
    peaks = some_peaks(model, image, 3)
    peak_response_maps(model, image, peaks)  # fills the kernel cache
    with torch.no_grad():  # an in-place update, as an optimizer step makes
        for conv in model.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.mul_(-1.5).add_(0.01)
    fresh = copy.deepcopy(model)  # new weight tensors: nothing cached for them
    updated = peak_response_maps(model, image, peaks)
    torch.testing.assert_close(updated, peak_response_maps(fresh, image, peaks), rtol=0, atol=0)


def test_a_model_that_upsamples_its_own_maps_gives_the_same_prms():
    base = build_classifier("test_resnet", 3)

    class SubPixel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(self.base(x), scale_factor=4, mode="bilinear", align_corners=True)

    image = torch.randn(1, 3, 64, 64)
    peaks = some_peaks(base, image, 4, upsample=4)
    inside = peak_response_maps(SubPixel(), image, peaks)
    outside = peak_response_maps(base, image, peaks, upsample=4)
    torch.testing.assert_close(inside, outside, rtol=0, atol=1e-7)


def ordinary_pass(model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = image.clone().requires_grad_(True)
    maps = model(leaf)
    maps.square().sum().backward()
    return maps.detach(), leaf.grad


def test_the_model_is_left_exactly_as_it_was():
    model = build_classifier("test_resnet", 3).train()
    model.trunk.layer1.eval()  # a mixed state must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.randn(1, 3, 64, 64)
    model.eval()
    before = ordinary_pass(model, image)
    model.train()
    model.trunk.layer1.eval()
    peak_response_maps(model, image, some_peaks(model, image, 3))
    model.train()
    model.trunk.layer1.eval()
    assert {name: m.training for name, m in model.named_modules()} == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any("forward" in m.__dict__ for m in model.modules())
    model.eval()
    after = ordinary_pass(model, image)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_training_flags_are_restored_after_the_pass():
    model = build_classifier("test_resnet", 3).train()
    peak_response_maps(model, torch.randn(1, 3, 64, 64), torch.tensor([[0, 0, 1, 1]]))
    assert all(m.training for m in model.modules())


def test_the_model_is_restored_when_the_pass_fails():
    model = build_classifier("test_resnet", 3)
    with pytest.raises(ValueError, match="peaks must index the class response maps"):
        peak_response_maps(model, torch.randn(1, 3, 64, 64), torch.tensor([[0, 0, 9, 9]]))
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert model.training


def test_a_prior_instance_forward_is_put_back():
    conv = nn.Conv2d(3, 2, 1)
    marker = conv.forward
    conv.forward = marker  # an instance attribute set by someone else
    with excitation_backprop(conv):
        assert conv.forward is not marker
    assert conv.__dict__["forward"] is marker


def test_bad_inputs_are_refused():
    model = build_classifier("test_resnet", 3)
    with pytest.raises(ValueError, match=r"one image of shape \(1, 3, H, W\)"):
        peak_response_maps(model, torch.randn(2, 3, 32, 32), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"peaks of shape \(K, 4\)"):
        peak_response_maps(model, torch.randn(1, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"no nn\.Conv2d layer"):
        peak_response_maps(
            nn.Identity(), torch.randn(1, 3, 8, 8), torch.zeros(1, 4, dtype=torch.long)
        )
    empty = peak_response_maps(
        model, torch.randn(1, 3, 32, 32), torch.zeros(0, 4, dtype=torch.long)
    )
    assert empty.shape == (0, 32, 32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prms_equal_cpu_prms():
    model = build_classifier("resnet10t", 3)
    image = torch.randn(1, 3, 64, 64)
    peaks = some_peaks(model, image, 4)
    cpu = peak_response_maps(model, image, peaks)
    for strategy, chunk in (("batched", None), ("batched", 3), ("sequential", None)):
        gpu = peak_response_maps(
            model.cuda(), image.cuda(), peaks.cuda(), strategy=strategy, chunk_size=chunk
        )
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-5)
        model.cpu()


def test_prms_equal_the_original_algorithm_on_the_normalised_image():
    """The original read PRMs at the normalised image its data loader made; the
    classifier normalises itself, and the signal passes its normalisation unscaled, so
    PRMs from a uint8 image equal the original algorithm's at the normalised tensor (to
    1e-7), and differ from the plain gradient at the image (1/std per channel)."""
    from benchmarks.prm import original_prms

    model = build_classifier("resnet10t", 4).eval()
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    peaks = some_peaks(model, image, 5, upsample=2)
    ours = peak_response_maps(model, image, peaks, upsample=2)
    original = original_prms(model, image, peaks, upsample=2)
    torch.testing.assert_close(ours, original, rtol=0, atol=1e-7)
    from_float = peak_response_maps(model, image.float() / 255, peaks, upsample=2)
    torch.testing.assert_close(from_float, ours, rtol=0, atol=0)

    class Scaled(nn.Module):  # the same network, normalising with plain tensor ops
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.classifier = model.trunk, model.classifier

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean, std = model.normalisation.mean, model.normalisation.std
            (features,) = self.trunk((x - mean) / std)
            return self.classifier(features)

    scaled = peak_response_maps(Scaled(), image.float() / 255, peaks, upsample=2)
    moved = (scaled - ours).abs().sum(dim=(1, 2))  # each PRM sums to 1
    assert (moved > 1e-3).all(), moved  # ImageNet std varies little: ~0.4% of each map
