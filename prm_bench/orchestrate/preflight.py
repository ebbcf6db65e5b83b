"""Checks of a plan's inputs before any compute (dataset layouts, every image and
annotation, proposal folders), and the binding of its stage keys to the data's content."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from prm_bench.config import ConfigError, Plan, stage_keys
from prm_bench.config.keys import DataDigests
from prm_bench.config.models import DataConfig, ExperimentConfig
from prm_bench.data import DATASETS, generate_missing, generator_of
from prm_bench.data.base import DataError, Dataset
from prm_bench.data.fingerprint import FileIndex, SplitPrint, index_for, survey
from prm_bench.data.prepare import LIST as TRAIN_AUG
from prm_bench.data.sources import SOURCES
from prm_bench.hashing import json_digest
from prm_bench.instances.proposals import GALLERIES
from prm_bench.model.catalogue import BACKBONES
from prm_bench.stages.errors import StageError, resolve_device
from prm_bench.stages.splits import open_split, open_training_data

if TYPE_CHECKING:
    import torch


class MissingInputs(DataError):
    """Inputs of a plan that are not on disk: one line each, with the command that makes
    it where one does (`lines`)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(f"{len(lines)} inputs are missing:\n- " + "\n- ".join(lines))
        self.lines = lines


def _hint(path: Path) -> str:
    """The command that makes `path`, where a data source or `data prepare` does."""
    text = path.as_posix()
    if text.endswith(TRAIN_AUG.as_posix()):
        root = text.removesuffix(TRAIN_AUG.as_posix()).rstrip("/") or "."
        return f"prm-bench data prepare voc2012 --root {root}"
    for name in SOURCES.names():
        for archive in SOURCES.get(name).archives:
            # the path it provides, the folder it unpacks into, or a file of that folder
            folder = path.parent.as_posix() if archive.unpack is None else None
            for made, seen in ((archive.provides, text), (archive.into, text),
                               (archive.into, folder)):  # fmt: skip
                if made != "." and seen is not None and seen.endswith(made):
                    root = seen.removesuffix(made).rstrip("/") or "."
                    return f"prm-bench data fetch {name} --root {root}"
    return ""


def missing_inputs(plan: Plan) -> list[str]:
    """Every input path the plan's cells read that does not exist, each with the command
    that makes it (a dry run lists them all; a run refuses to start)."""
    wanted: dict[Path, str] = {}
    for cell in plan.cells:
        config = cell.config
        data = config.data
        if generator_of(data.name) is None:  # a generated kind's opener says how to make it
            wanted.setdefault(Path(data.root), "data.root")
            for key in ("train_split", "eval_split", "tune_split"):
                split = getattr(data, key)
                if split is not None and ("/" in split or split.endswith(".txt")):
                    wanted.setdefault(Path(split), f"data.{key}")
        if GALLERIES.get(config.proposals.gallery).needs_root and config.proposals.root:
            wanted.setdefault(Path(config.proposals.root), "proposals.root")
        if config.backbone.weights is not None:
            wanted.setdefault(Path(config.backbone.weights), "backbone.weights")
    lines = []
    for path, key in wanted.items():
        if not path.exists():
            hint = _hint(path)
            lines.append(f"{key} {path} does not exist" + (f": {hint}" if hint else ""))
    return lines


def _check_objects(dataset: Dataset, split: str) -> None:
    """Refuse an evaluation split without images or labelled objects: every AP would be
    empty and the run would end without a number."""
    if not dataset.ids:
        raise DataError(f"the evaluation split {split!r} holds no image")
    if not any(dataset.labels(i).any() for i in dataset.ids):
        raise DataError(
            f"the evaluation split {split!r} ({len(dataset.ids)} images) holds no labelled "
            "object: every AP would be empty; check its annotations"
        )


def _one_size(survey: SplitPrint, data: DataConfig, which: str) -> None:
    """Refuse a split of several image sizes when images are not resized: training and
    its per-epoch scoring stack images into batches of one size."""
    shapes = sorted(set(survey.sizes.values()))
    if data.image_size is None and len(shapes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in shapes[:3])
        raise DataError(
            f"data.image_size is null but the {len(survey.sizes)} {which} images of "
            f"{data.root} have {len(shapes)} sizes ({shown}, ...): training batches need "
            "one size, set data.image_size (e.g. 448)"
        )


class Surveys:
    """The splits a plan reads, each checked and digested once (`data.fingerprint`),
    with the file indexes kept in `cache_dir` (None: nothing kept between runs)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self._indexes: dict[str, FileIndex] = {}
        self._splits: dict[str, tuple[Dataset, SplitPrint]] = {}

    def index(self, root: Path) -> FileIndex:
        """The file index of a data or proposals root."""
        name = str(Path(root).resolve())
        if name not in self._indexes:
            self._indexes[name] = index_for(self.cache_dir, root)
        return self._indexes[name]

    def split(self, data: DataConfig, which: str) -> tuple[Dataset, SplitPrint]:
        """A split of a cell (`train`, `eval`, `tune`; evaluated ones with their instance
        masks), opened, checked and digested."""
        split, limit = getattr(data, f"{which}_split"), getattr(data, f"limit_{which}")
        marker = json.dumps([data.name, str(data.root), which, split, limit])
        if marker not in self._splits:
            dataset = open_split(data, which, segmentation=which != "train")
            self._splits[marker] = dataset, survey(dataset, self.index(data.root))
        return self._splits[marker]

    def digests(self, config: ExperimentConfig) -> DataDigests:
        """What a cell's stages read, by content."""
        data = config.data
        train, evaluation = self.split(data, "train")[1], self.split(data, "eval")[1]
        dataset, evaluated = self.split(data, "eval" if data.evaluate_on == "eval" else "tune")
        gallery = GALLERIES.get(config.proposals.gallery)
        files = None
        if gallery.suffix is not None and config.proposals.root is not None:
            root, index = config.proposals.root, self.index(config.proposals.root)
            files = json_digest([index.digest(root / f"{i}{gallery.suffix}") for i in dataset.ids])
        return DataDigests(
            training=json_digest([train.of("images", "labels"), evaluation.of("images", "labels")]),
            images=evaluated.of("images"),
            truth=evaluated.of("labels", "masks"),
            proposals=files,
        )

    def save(self) -> None:
        """Keep what was learnt for the next run."""
        for index in self._indexes.values():
            index.save()


def bind_data(plan: Plan, cache_dir: Path | None = None) -> Plan:
    """The plan with every cell's stage keys bound to the content of the data it reads,
    so a replaced dataset or an edited split or annotation reruns exactly the stages
    that read it (docs/design.md, section 5, "Data in the keys"); unchanged files are
    not read again."""
    surveys = Surveys(cache_dir)
    try:
        return _bound(plan, surveys)
    finally:
        surveys.save()


def _bound(plan: Plan, surveys: Surveys, skip: set[Path] | None = None) -> Plan:
    """The plan with its keys bound to the data, but for cells whose data root is in
    `skip` (a dry run's datasets still to generate): the plan is then not bound."""
    skip = skip or set()
    cells = [
        cell
        if cell.config.data.root in skip
        else cell.model_copy(update={"keys": stage_keys(cell.config, surveys.digests(cell.config))})
        for cell in plan.cells
    ]
    return plan.model_copy(update={"cells": cells, "data_bound": not skip})


def preflight(plan: Plan, cache_dir: Path | None = None, dry_run: bool = False) -> Plan:
    """Check every cell's inputs before any compute: every path it reads, then dataset
    layouts, every image and annotation (those unchanged since the file index in
    `cache_dir` saw them are not decoded again) and proposal folders; the plan with its
    keys bound to the data (`bind_data`). With `dry_run` nothing is generated (see
    `dry_run_notes`) and the file indexes are read but not written: nothing is written.

    Raises:
        MissingInputs: every missing path, with the command that makes it.
        DataError: naming the first bad layout (a generated kind is made first where the
            config sets data.generate).
    """
    missing = missing_inputs(plan)
    if missing:
        raise MissingInputs(missing)
    check_models(plan)
    seen: set[str] = set()
    surveys = Surveys(cache_dir)
    notes = dry_run_notes(plan) if dry_run else {}
    try:
        for cell in plan.cells:
            if cell.config.data.root not in notes:
                _check_cell(cell.config, surveys, seen)
        return _bound(plan, surveys, skip=set(notes))
    finally:
        if not dry_run:  # a dry run reads the file indexes (an unchanged tree is fast) only
            surveys.save()


def check_models(plan: Plan) -> None:
    """Refuse, before any compute, what every cell would fail on: a device that is not
    here, and a backbone that timm does not know or that is not a CNN (once per name,
    not once per cell after training started). torch and timm load only where a check
    needs them: a CUDA device or bf16 to confirm, a `timm:` backbone to build.

    Raises:
        ConfigError: naming the key and the value.
    """
    amp = any(c.config.train.amp for c in plan.cells)
    if plan.run.device == "cuda" or amp:
        try:
            device = resolve_device(plan.run.device)
        except StageError as err:
            raise ConfigError(f"--device / run.device {plan.run.device}: {err}") from None
    if amp and not bf16_supported(device):
        raise ConfigError(
            f"train.amp: true needs bf16 autocast, which {device} does not support; set "
            "train.amp: false (the results then match every other device's)"
        )
    wants_tensorboard = any("tensorboard" in c.config.train.log_to for c in plan.cells)
    if wants_tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.log_to: [tensorboard] needs TensorBoard: pip install 'prm-bench[tensorboard]'"
        )
    for name in sorted({cell.config.backbone.name for cell in plan.cells}):
        try:
            BACKBONES.get(name)
        except ValueError as err:
            raise ConfigError(f"backbone.name {name}: {err}") from None


def bf16_supported(device: torch.device) -> bool:
    """Whether training can autocast to bf16 on `device` (every CPU torch runs on; CUDA
    from Ampere on)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def dry_run_notes(plan: Plan) -> dict[Path, str]:
    """Per generated dataset a run would make first, what it would write (a dry run
    writes nothing: those cells' data are not checked, and their keys name the config
    alone, so every stage shows as to run)."""
    notes = {}
    for cell in plan.cells:
        data = cell.config.data
        pending = DATASETS.get(data.name).pending
        if data.generate and pending is not None and data.root not in notes:
            note = pending(Path(data.root))
            if note is not None:
                notes[data.root] = note
    return notes


def _check_cell(config: ExperimentConfig, surveys: Surveys, seen: set[str]) -> None:
    """Check the inputs of one cell, unless a cell with the same data and proposals was."""
    data, proposals = config.data, config.proposals
    marker = json.dumps(
        [data.model_dump(mode="json"), proposals.model_dump(mode="json")], sort_keys=True
    )
    if marker in seen:
        return
    seen.add(marker)
    if GALLERIES.get(proposals.gallery).needs_root and (
        proposals.root is None or not proposals.root.is_dir()
    ):
        raise DataError(
            f"proposals.root {proposals.root} must be the folder of the {proposals.gallery} files"
        )
    if data.generate and generator_of(data.name) is not None:
        generate_missing(data.name, data.root)
    _one_size(surveys.split(data, "train")[1], data, "training")
    evaluation, printed = surveys.split(data, "eval")
    _check_objects(evaluation, data.eval_split)
    _one_size(printed, data, "evaluation")
    if data.tune_split is not None:
        surveys.split(data, "tune")
        open_training_data(data)  # refuses any overlap of the three splits
