"""The pipeline stages (DESIGN 5): train -> infer -> retrieve -> evaluate.

Each stage reads the previous stage's files from the store and writes its own; its key
hashes only the config fields it depends on (`common.stage_keys`). Every stage has one
contract, `run(config, store, keys, device) -> Path` (its folder in the store), and
`RUNNERS` maps a stage name to it, in DAG order, so the runner makes one call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prm_bench.stages import evaluate, infer, retrieve, train

RUNNERS: dict[str, Callable[..., Path]] = {
    "train": train.run,
    "infer": infer.run,
    "retrieve": retrieve.run,
    "evaluate": evaluate.run,
}
