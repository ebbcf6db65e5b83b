import pickle

import numpy as np
import pytest
import safetensors.torch
import skimage.data
import timm
import torch
from PIL import Image

from prm_bench.model.backbones import (
    BACKBONES,
    BackboneError,
    build_classifier,
    efficientnet_lite0_weights,
    get_backbone,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
)
from prm_bench.model.catalogue import IMAGENET_STD
from prm_bench.registry import UnknownNameError

SIZE = 64


@pytest.mark.parametrize("name", [*BACKBONES.names(), "timm:resnet10t", "timm:test_efficientnet"])
def test_every_backbone_gives_maps_with_its_recorded_channels_and_stride(name):
    spec = get_backbone(name)
    model = build_classifier(name, num_classes=3).eval()
    with torch.no_grad():
        (features,) = model.trunk(torch.randn(2, 3, SIZE, SIZE))
        maps = model(torch.randn(2, 3, SIZE, SIZE))
    assert features.shape == (2, spec.channels, SIZE // spec.stride, SIZE // spec.stride)
    assert maps.shape == (2, 3, SIZE // spec.stride, SIZE // spec.stride)
    assert model.stride == spec.stride
    assert model.classifier.bias is not None


def test_paper_backbones_match_the_paper_architecture():
    assert (get_backbone("resnet50").channels, get_backbone("resnet50").stride) == (2048, 32)
    assert (get_backbone("vgg16").channels, get_backbone("vgg16").stride) == (512, 16)
    assert get_backbone("vgg16-pool5").stride == 32
    assert get_backbone("resnet50").pretrained_tag == "resnet50.tv_in1k"
    assert get_backbone("vgg16").pretrained_tag == "vgg16.tv_in1k"


def _top5(model: torch.nn.Module, photo, spec) -> list[int]:
    image = torch.from_numpy(np.array(Image.fromarray(photo).resize((224, 224))))
    x = image.permute(2, 0, 1)[None].float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x / torch.tensor(spec.std).view(1, 3, 1, 1))
    return logits[0].topk(5).indices.tolist()


def test_packaged_imagenet_weights_recognise_real_photographs():
    spec = get_backbone("efficientnet_lite0")
    full = timm.create_model(spec.timm_name, pretrained=False).eval()
    full.load_state_dict(efficientnet_lite0_weights(head=True))  # strict: every key maps
    assert set(_top5(full, skimage.data.chelsea(), spec)) & {281, 282, 283, 284, 285}  # cats
    assert set(_top5(full, skimage.data.coffee(), spec)) & {967, 968, 504}  # espresso, cup
    # the classifier's trunk carries exactly those weights (head dropped)
    model = build_classifier("efficientnet_lite0", 20, pretrained=True)
    trunk = model.trunk.state_dict()
    assert trunk and all(torch.equal(v, full.state_dict()[k]) for k, v in trunk.items())


def test_unknown_backbone_suggests_a_close_name():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet50'"):
        get_backbone("resnet5O")


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(BackboneError, match="unknown timm model 'no_such_net'"):
        get_backbone("timm:no_such_net")


def test_vision_transformers_are_refused():
    with pytest.raises(BackboneError, match="defined for convolutional networks"):
        get_backbone("timm:test_vit")


def test_output_stride_dilates_resnets_and_is_refused_elsewhere():
    model = build_classifier("resnet10t", 2, output_stride=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 2, SIZE // 8, SIZE // 8)
    assert model.stride == 8
    lite = build_classifier("efficientnet_lite0", 2, output_stride=16).eval()
    with torch.no_grad():
        assert lite(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 2, SIZE // 16, SIZE // 16)
    with pytest.raises(BackboneError, match="output_stride=8 is not available for 'vgg16'"):
        build_classifier("vgg16", 2, output_stride=8)


def test_bad_arguments_are_refused():
    with pytest.raises(BackboneError, match="num_classes"):
        build_classifier("test_resnet", 0)
    with pytest.raises(BackboneError, match="not both"):
        build_classifier("test_resnet", 2, pretrained=True, weights="x.safetensors")
    with pytest.raises(BackboneError, match="does not exist"):
        build_classifier("test_resnet", 2, weights="missing.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weight_file_initialises_the_trunk(tmp_path, suffix):
    source = timm.create_model("test_resnet", pretrained=False)
    for parameter in source.parameters():
        torch.nn.init.normal_(parameter)
    state = source.state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    model = build_classifier("test_resnet", 4, weights=path)
    trunk = model.trunk.state_dict()
    assert len(trunk) > 10
    for key, value in trunk.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_weight_file_of_another_architecture_names_the_file(tmp_path):
    path = tmp_path / "other.safetensors"
    other = timm.create_model("resnet10t", pretrained=False).state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in other.items()}, str(path))
    with pytest.raises(BackboneError, match=r"other\.safetensors does not fit backbone"):
        build_classifier("test_resnet", 2, weights=path)


def test_checkpoint_round_trip_restores_every_tensor_and_the_output(tmp_path):
    model = build_classifier("test_resnet", 5).eval()
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    torch.manual_seed(123)
    fresh = load_checkpoint(build_classifier("test_resnet", 5), path).eval()
    for (key, a), (_, b) in zip(
        model.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    image = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(image), fresh(image), rtol=0, atol=0)


class _Payload:
    pass


def test_torch_checkpoints_are_loaded_without_unpickling_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict_file(path)


@pytest.mark.parametrize("name", ["test_resnet", "efficientnet_lite0"])
def test_the_classifier_normalises_its_input_as_its_weights_expect(name):
    """Issue 24 item 7: normalisation was the caller's job (`stages.inputs.normalise`), so
    raw images silently gave wrong maps; the classifier now takes uint8 or 0..1 images
    and normalises with its spec's mean and std (ImageNet's, or 0.5 for EfficientNet)."""
    model = build_classifier(name, 3).eval()
    image = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    mean = torch.tensor(model.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.spec.std).view(1, 3, 1, 1)
    by_hand = (image.float() / 255.0 - mean) / std
    with torch.no_grad():
        (features,) = model.trunk(by_hand)
        expected = model.classifier(features)
        assert torch.equal(model(image), expected)
        assert torch.equal(model(image.float() / 255.0), expected)
    assert model.spec.std == ((0.5,) * 3 if name.startswith("efficientnet") else IMAGENET_STD)
    with pytest.raises(TypeError, match=r"uint8 \(0..255\) or floating \(0..1\)"):
        model(image.to(torch.int32))


def test_normalisation_adds_nothing_to_checkpoints(tmp_path):
    """Its mean and std are buffers that follow the device but are not saved: a
    checkpoint holds the trunk and the classifier, as before."""
    model = build_classifier("test_resnet", 3)
    assert not any("normalisation" in key for key in model.state_dict())
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    assert set(load_state_dict_file(path)) == set(model.state_dict())
    assert model.double().normalisation.mean.dtype == torch.float64
