"""The stage runners by stage name, and the stages that run several cells as one task
(docs/design.md, section 5): imported by the worker that computes, with torch."""

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
