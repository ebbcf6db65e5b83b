"""What the stages read: a cell's splits, image tensors and the streaming training loader."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prm_bench.config.keys import computed_proposals_key
from prm_bench.config.models import DataConfig
from prm_bench.data import open_dataset
from prm_bench.data.base import DataError, Dataset, JoinedSplits, check_disjoint
from prm_bench.model.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from prm_bench.stages.store import Store


def computed_proposals(data: DataConfig, store: Store) -> Path:
    """Where galleries computed from the images (`store_cache`, e.g. `embedded`) keep
    their proposals: one folder per dataset, shared by every gallery built on them
    (`embedded` and `gt+embedded` compute the embedded proposals once), every split and
    every limit; each gallery names its own subfolder after its parameters."""
    return store.path("proposals", computed_proposals_key(data))


def open_split(data: DataConfig, which: str, segmentation: bool = False) -> Dataset:
    """A split of a cell, limited to its first N images: `train`, `eval`, `tune`, or
    `evaluated` (the one the cell infers and evaluates on: eval, or tune when tuning)."""
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


def ground_truth(dataset: Dataset) -> list[list[dict]]:
    """Per image of `dataset`, its instances as the metrics read them: `mask`, `class`,
    `box` and `difficult`."""
    return [
        [
            {"mask": i.mask, "class": i.label, "box": i.box, "difficult": i.difficult}
            for i in dataset.instances(image_id)
        ]
        for image_id in dataset.ids
    ]


def open_training_data(data: DataConfig) -> tuple[Dataset, Dataset]:
    """Training and evaluation splits, refusing any overlap between them (and with the
    tuning split, whose images the classifier must not see either). With `data.leak:
    train-on-eval` the training split is the training images and then the evaluation
    images (the released PRM config trains on VOC trainval, which holds seg val)."""
    train = open_split(data, "train")
    evaluation = open_split(data, "eval")
    check_disjoint(train, evaluation)
    if data.leaks:  # the gap study's measured leak, spelled out
        train = JoinedSplits(train, evaluation)
    if data.tune_split is not None:
        tune = open_split(data, "tune")
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


class BatchPlan:
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

    def __init__(self, images: ImageSplit, plan: BatchPlan, pin: bool) -> None:
        self.images, self.plan, self.pin = images, plan, pin

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.plan:
            stacked = torch.stack([self.images[item] for item in batch])
            yield stacked.pin_memory() if self.pin else stacked


def batches(
    images: ImageSplit, plan: BatchPlan, workers: int = 0, pin: bool = False
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
