"""The pipeline stages (DESIGN 5): train -> infer -> retrieve -> evaluate.

Each stage reads the previous stage's files from the store and writes its own; its key
hashes only the config fields it depends on (`config.keys.stage_keys`). Every stage has one
contract, `run(config, store, keys, device) -> Path` (its folder in the store), and
`RUNNERS` maps a stage name to it, in DAG order, so the runner makes one call.

A stage whose cells gain from running together also has an entry in `GROUPED`: what
cells must share to be grouped (from their keys), and `run_cells(configs, store, keys,
device) -> [None or the error of each cell]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prm_bench.stages import evaluate, infer, retrieve, train

RUNNERS: dict[str, Callable[..., Path]] = {
    "train": train.run,
    "infer": infer.run,
    "retrieve": retrieve.run,
    "evaluate": evaluate.run,
}


@dataclass(frozen=True)
class Grouped:
    """How a stage runs several cells in one task."""

    shared_by: Callable[[dict[str, str]], tuple]
    run_cells: Callable[..., list[str | None]]


GROUPED: dict[str, Grouped] = {
    "retrieve": Grouped(retrieve.shared_by, retrieve.run_cells),
}
