"""What a cell reads, without torch: its splits (limited, checked disjoint, the gap
study's leak spelled out), their ground truth, and where its computed proposals live.
Planning (`orchestrate.preflight`) and the report read these; `stages.inputs` turns the
images into tensors."""

from __future__ import annotations

from pathlib import Path

from prm_bench.config.keys import computed_proposals_key
from prm_bench.config.models import DataConfig
from prm_bench.data import open_dataset
from prm_bench.data.base import DataError, Dataset, JoinedSplits, check_disjoint
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
