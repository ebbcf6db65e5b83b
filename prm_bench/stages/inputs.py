"""What the stages read as tensors: images, and the streaming training loader (a cell's
splits are `stages.splits`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from prm_bench.data.base import Dataset


def image_tensor(image: np.ndarray, size: int | None) -> torch.Tensor:
    """(1, 3, S, S) uint8 tensor of an RGB uint8 image (H, W, 3), resized (bilinear) when
    `size` is set: what a classifier takes (it normalises its input itself)."""
    if size is not None and image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]


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
        image = image_tensor(self.dataset.image(self.dataset.ids[index]), self.size)[0]
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
    copy to it can then overlap); the classifier normalises each batch itself.

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
