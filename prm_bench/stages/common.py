"""What the stages share: stage keys, the device, datasets and image tensors."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from prm_bench.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from prm_bench.config import ExperimentConfig, config_hash
from prm_bench.data import open_dataset
from prm_bench.data.base import Dataset, check_disjoint
from prm_bench.methods import METHODS

STAGES = ("train", "infer", "retrieve", "evaluate")


class StageError(RuntimeError):
    """A stage that cannot finish for a reason the user should read (e.g. a NaN loss)."""


def _data_part(config: ExperimentConfig, *fields: str) -> dict:
    return {
        f: str(v) if f == "root" else v
        for f, v in config.data.model_dump(mode="json").items()
        if f in fields
    }


def stage_keys(config: ExperimentConfig) -> dict[str, str]:
    """The key of every stage of a cell; each hashes only what the stage depends on."""
    data_train = _data_part(
        config,
        "name",
        "root",
        "train_split",
        "eval_split",
        "image_size",
        "limit_train",
        "limit_eval",
    )
    train = config_hash("train", data_train, config.backbone, config.stimulation, config.train)
    # the PRM strategy changes speed, not results (equal to 1e-6): not part of the key
    infer = config_hash("infer", train, config.infer.model_dump(mode="json", exclude={"strategy"}))
    proposals = config_hash(
        "proposals",
        _data_part(config, "name", "root", "eval_split", "limit_eval"),
        config.proposals,
    )
    uses_retrieval = METHODS.get(config.method.name).uses_retrieval
    method_part = config.retrieval if uses_retrieval else config.method.baseline
    retrieve = config_hash("retrieve", infer, proposals, config.method.name, method_part)
    evaluate = config_hash("evaluate", retrieve, config.eval)
    return {
        "train": train,
        "infer": infer,
        "proposals": proposals,
        "retrieve": retrieve,
        "evaluate": evaluate,
    }


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA where available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def open_split(config: ExperimentConfig, which: str, segmentation: bool = False) -> Dataset:
    """The training or evaluation split of a cell, limited to its first N images."""
    data = config.data
    split = data.train_split if which == "train" else data.eval_split
    dataset = open_dataset(data.name, data.root, split, segmentation=segmentation)
    limit = data.limit_train if which == "train" else data.limit_eval
    if limit is not None:
        dataset.ids = dataset.ids[:limit]
    return dataset


def open_training_data(config: ExperimentConfig) -> tuple[Dataset, Dataset]:
    """Training and evaluation splits, refusing any overlap between them."""
    train = open_split(config, "train")
    evaluation = open_split(config, "eval")
    check_disjoint(train, evaluation)
    return train, evaluation


def _uint8_tensor(image: np.ndarray, size: int | None) -> torch.Tensor:
    if size is not None and image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]


def normalise(images: torch.Tensor, spec: BackboneSpec | None = None) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> float, normalised with the mean/std the backbone's
    weights expect (ImageNet's when `spec` is None)."""
    mean = torch.tensor(spec.mean if spec else IMAGENET_MEAN, device=images.device)
    std = torch.tensor(spec.std if spec else IMAGENET_STD, device=images.device)
    return (images.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def image_tensor(
    image: np.ndarray, size: int | None, spec: BackboneSpec | None = None
) -> torch.Tensor:
    """(1, 3, S, S) normalised tensor of an RGB uint8 image, resized when `size` is set."""
    return normalise(_uint8_tensor(image, size), spec)


def load_images(dataset: Dataset, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, 3, S, S) as uint8 (a quarter of float32's memory: 6.4 GB for VOC
    train_aug at 448 px) and labels (N, C) of a split; `normalise` each batch."""
    images = torch.cat([_uint8_tensor(dataset.image(i), size) for i in dataset.ids])
    labels = torch.from_numpy(np.stack([dataset.labels(i) for i in dataset.ids]))
    return images, labels
