"""What the stages share: stage keys, the device, datasets and image tensors."""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from prm_bench.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from prm_bench.config import ExperimentConfig, config_hash
from prm_bench.data import open_dataset
from prm_bench.data.base import DataError, Dataset, check_disjoint
from prm_bench.methods import METHODS

if TYPE_CHECKING:
    from prm_bench.stages.store import Store

STAGES = ("train", "infer", "retrieve", "evaluate")


class StageError(RuntimeError):
    """A stage that cannot finish for a reason the user should read (e.g. a NaN loss)."""


def describe_failure(err: Exception) -> str:
    """Why a stage failed, in one line: a `StageError`'s own message, else the
    exception's type and message (no traceback)."""
    if isinstance(err, StageError):
        return str(err)
    return "".join(traceback.format_exception_only(type(err), err)).strip()


# data fields no trained model depends on: a new DataConfig field is part of the training
# key unless it is listed here
_NOT_TRAINING = {"generate", "tune_split", "limit_tune", "evaluate_on"}


def _training_data(config: ExperimentConfig) -> dict:
    return {
        f: str(v) if f == "root" else v
        for f, v in config.data.model_dump(mode="json").items()
        if f not in _NOT_TRAINING
    }


def _evaluated_data(config: ExperimentConfig) -> dict:
    split, limit = config.data.evaluated
    data = config.data
    return {"name": data.name, "root": str(data.root), "eval_split": split, "limit_eval": limit}


def computed_proposals(config: ExperimentConfig, store: Store) -> Path:
    """Where galleries computed from the images (`store_cache`, e.g. `embedded`) keep
    their proposals: one folder per dataset, shared by every gallery built on them
    (`embedded` and `gt+embedded` compute the embedded proposals once), every split and
    every limit; each gallery names its own subfolder after its parameters."""
    data = {"name": config.data.name, "root": str(config.data.root)}
    return store.path("proposals", config_hash("computed", data))


def stage_keys(config: ExperimentConfig) -> dict[str, str]:
    """The key of every stage of a cell; each hashes only what the stage depends on."""
    training = config.train.model_dump(mode="json", exclude={"loader_workers"})
    train = config_hash(
        "train", _training_data(config), config.backbone, config.stimulation, training
    )
    # the PRM strategy changes speed, not results (equal to 1e-6): not part of the key
    infer_part = config.infer.model_dump(mode="json", exclude={"strategy", "chunk_size"})
    if config.data.evaluate_on == "eval":  # the train key already names the eval split
        infer = config_hash("infer", train, infer_part)
    else:
        infer = config_hash("infer", train, infer_part, _evaluated_data(config))
    proposals = config_hash("proposals", _evaluated_data(config), config.proposals)
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
    """A split of a cell, limited to its first N images: `train`, `eval`, `tune`, or
    `evaluated` (the one the cell infers and evaluates on: eval, or tune when tuning)."""
    data = config.data
    split, limit = {
        "train": (data.train_split, data.limit_train),
        "eval": (data.eval_split, data.limit_eval),
        "tune": (data.tune_split, data.limit_tune),
        "evaluated": data.evaluated,
    }[which]
    if split is None:
        raise DataError(f"data.{which}_split is not set")
    dataset = open_dataset(data.name, data.root, split, segmentation=segmentation)
    if limit is not None:
        dataset.ids = dataset.ids[:limit]
    return dataset


def open_training_data(config: ExperimentConfig) -> tuple[Dataset, Dataset]:
    """Training and evaluation splits, refusing any overlap between them (and with the
    tuning split, whose images the classifier must not see either)."""
    train = open_split(config, "train")
    evaluation = open_split(config, "eval")
    check_disjoint(train, evaluation)
    if config.data.tune_split is not None:
        tune = open_split(config, "tune")
        check_disjoint(train, tune, second="tuning")
        check_disjoint(tune, evaluation, first="tuning")
    return train, evaluation


def uint8_tensor(image: np.ndarray, size: int | None) -> torch.Tensor:
    """(1, 3, S, S) uint8 tensor of an RGB image, resized (bilinear) when `size` is set."""
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
    return normalise(uint8_tensor(image, size), spec)


class ImageSplit(torch.utils.data.Dataset):
    """The images of a split as uint8 tensors (3, S, S), decoded when asked for: training
    streams them batch by batch instead of holding the split in memory (VOC train_aug at
    448 px would be 6.4 GB, COCO train2014 about 50 GB). An item is an index, or an
    (index, flip) pair: flipped left-right when `flip`, where the image is decoded."""

    def __init__(self, dataset: Dataset, size: int | None) -> None:
        self.dataset, self.size = dataset, size
        self.labels = torch.from_numpy(np.stack([dataset.labels(i) for i in dataset.ids]))

    def __len__(self) -> int:
        return len(self.dataset.ids)

    def __getitem__(self, item: int | tuple[int, bool]) -> torch.Tensor:
        index, flip = item if isinstance(item, tuple) else (item, False)
        image = uint8_tensor(self.dataset.image(self.dataset.ids[index]), self.size)[0]
        return image.flip(2) if flip else image


class Plan:
    """The batches of the next pass over a split, as lists of `ImageSplit` items. A
    loader reads the plan each time a pass starts, so one loader (and its worker
    processes) serves every epoch: set `batches`, then iterate the loader."""

    def __init__(self, batches: list[list] | None = None) -> None:
        self.batches = batches or []

    def __iter__(self) -> Iterator[list]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _InProcess:
    """A loader without worker processes: each pass stacks the plan's batches here."""

    def __init__(self, images: ImageSplit, plan: Plan, pin: bool) -> None:
        self.images, self.plan, self.pin = images, plan, pin

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.plan:
            stacked = torch.stack([self.images[item] for item in batch])
            yield stacked.pin_memory() if self.pin else stacked


def batches(
    images: ImageSplit, plan: Plan, workers: int = 0, pin: bool = False
) -> Iterable[torch.Tensor]:
    """A loader of uint8 batches (B, 3, S, S) of `images` in the order of `plan`, which
    may change between passes; decoded (and flipped) by `workers` persistent processes
    ahead of use (0: in this process), in pinned memory when `pin` (a CUDA device: the
    copy to it can then overlap); `normalise` each batch.

    Workers only decode what the plan names, and the plan of an epoch is drawn in this
    process before its pass starts, so the draws, and the results, are the same whatever
    the number of workers."""
    if workers == 0:
        return _InProcess(images, plan, pin)
    return torch.utils.data.DataLoader(
        images,
        batch_sampler=plan,
        num_workers=workers,
        collate_fn=torch.stack,
        pin_memory=pin,
        persistent_workers=True,
    )
