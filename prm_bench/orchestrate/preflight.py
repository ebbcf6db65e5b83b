"""Checks of a plan's inputs before any compute: dataset layouts and proposal folders."""

from __future__ import annotations

import json

from prm_bench.config import Plan
from prm_bench.data import generate_missing, generator_of
from prm_bench.data.base import DataError, check_split
from prm_bench.instances.proposals import GALLERIES
from prm_bench.stages.inputs import open_split, open_training_data


def preflight(plan: Plan) -> None:
    """Check every cell's inputs before any compute: dataset layouts and proposal folders.

    Raises:
        DataError: naming the missing path (a generated kind is made first where the
            config sets data.generate).
    """
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
        check_split(open_split(cell.config.data, "eval", segmentation=True))
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
