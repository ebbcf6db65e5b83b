"""Checks of a plan's inputs before any compute: dataset layouts and proposal folders."""

from __future__ import annotations

import json
from pathlib import Path

from prm_bench.config import Plan
from prm_bench.data import generate_missing, generator_of
from prm_bench.data.base import DataError, Dataset, check_split
from prm_bench.data.prepare import LIST as TRAIN_AUG
from prm_bench.data.sources import SOURCES
from prm_bench.instances.proposals import GALLERIES
from prm_bench.stages.inputs import open_split, open_training_data


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
    """Check an evaluation split's images, and that it holds images and labelled objects:
    without them every AP is empty and the run would end without a number."""
    check_split(dataset)
    if not dataset.ids:
        raise DataError(f"the evaluation split {split!r} holds no image")
    if not any(dataset.labels(i).any() for i in dataset.ids):
        raise DataError(
            f"the evaluation split {split!r} ({len(dataset.ids)} images) holds no labelled "
            "object: every AP would be empty; check its annotations"
        )


def preflight(plan: Plan) -> None:
    """Check every cell's inputs before any compute: every path it reads, then dataset
    layouts and proposal folders.

    Raises:
        MissingInputs: every missing path, with the command that makes it.
        DataError: naming the first bad layout (a generated kind is made first where the
            config sets data.generate).
    """
    missing = missing_inputs(plan)
    if missing:
        raise MissingInputs(missing)
    seen: set[str] = set()
    for cell in plan.cells:
        data, proposals = cell.config.data, cell.config.proposals
        marker = json.dumps(
            [data.model_dump(mode="json"), proposals.model_dump(mode="json")], sort_keys=True
        )
        if marker in seen:
            continue
        seen.add(marker)
        if GALLERIES.get(proposals.gallery).needs_root and (
            proposals.root is None or not proposals.root.is_dir()
        ):
            raise DataError(
                f"proposals.root {proposals.root} must be the folder of the "
                f"{proposals.gallery} files"
            )
        if data.generate and generator_of(data.name) is not None:
            generate_missing(data.name, data.root)
        train_sizes = check_split(open_split(cell.config.data, "train"))
        _check_objects(open_split(cell.config.data, "eval", segmentation=True), data.eval_split)
        if data.tune_split is not None:
            check_split(open_split(cell.config.data, "tune", segmentation=True))
            open_training_data(cell.config.data)  # refuses any overlap of the three splits
        shapes = sorted(set(train_sizes.values()))
        if data.image_size is None and len(shapes) > 1:
            shown = ", ".join(f"{w}x{h}" for h, w in shapes[:3])
            raise DataError(
                f"data.image_size is null but the {len(train_sizes)} training images of "
                f"{data.root} have {len(shapes)} sizes ({shown}, ...): training batches need "
                "one size, set data.image_size (e.g. 448)"
            )
