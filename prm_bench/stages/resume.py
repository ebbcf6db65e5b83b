"""A training's state after each finished epoch, so that a training stopped anywhere (a
kill, a preemption, a crash) resumes from its last finished epoch to the same model.

The state is two files in the stage's folder, both hidden from its completion record
(their names start with a dot) and both removed when the stage completes:
`.resume.safetensors` (model weights, optimizer tensors, the torch and data-plan
generators' states) and `.resume.json` (the epoch, the log so far, the optimizer's
scalars, the elapsed seconds and the SHA-256 of the tensors file). The JSON is written
last, atomically: a state is there only when both are, and a tensors file that does not
match its JSON is not trusted. Nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from prm_bench.atomic import atomic_path, write_atomic
from prm_bench.hashing import file_digest
from prm_bench.progress import report

TENSORS, STATE = ".resume.safetensors", ".resume.json"


@dataclass
class Resumed:
    """Where a resumed training stands: the last finished epoch, the log up to it and
    the seconds it had taken."""

    epoch: int
    log: list[dict[str, Any]]
    seconds: float
    # a state saved mid-epoch (preemption): {"epoch", "step", "batches", "losses"}, the
    # epoch in progress, its steps done, its whole batch plan and their losses
    partial: dict[str, Any] | None = None


def save_state(folder: Path, training: dict[str, Any], done: Resumed) -> None:
    """Write the state after epoch `done.epoch`. `training` holds `model`, `optimizer` and
    `generator` (the data plan's)."""
    model, optimizer, generator = training["model"], training["optimizer"], training["generator"]
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optim["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.plan"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    with atomic_path(folder / TENSORS) as tmp:
        safetensors.torch.save_file(tensors, str(tmp))
    record = {
        "epoch": done.epoch, "log": done.log, "seconds": done.seconds,
        "param_groups": optim["param_groups"], "scalars": scalars,
        "tensors_sha256": file_digest(folder / TENSORS), "partial": done.partial,
    }  # fmt: skip
    write_atomic(folder / STATE, (json.dumps(record) + "\n").encode())


def load_state(folder: Path, training: dict[str, Any]) -> Resumed | None:
    """Restore the last saved state into `training`'s model, optimizer and generator (and
    torch's own generator); None when there is none, or it is damaged (then training
    starts over, as without a state, and says so)."""
    if not (folder / STATE).exists():
        return None
    try:
        record = json.loads((folder / STATE).read_text())
        if file_digest(folder / TENSORS) != record["tensors_sha256"]:
            raise ValueError("its tensors differ from their record")
        tensors = safetensors.torch.load_file(str(folder / TENSORS))
    except (OSError, ValueError, KeyError) as err:
        report(f"the epoch state in {folder} is damaged ({err}): training from the start")
        return None
    model, optimizer = training["model"], training["optimizer"]
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, field = name.split(".", 2)
            state.setdefault(int(index), {})[field] = value
    for index, values in record["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    training["generator"].set_state(tensors["rng.plan"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    partial = record.get("partial")
    if partial is not None:  # JSON lists back to the plan's (index, flip) pairs
        partial["batches"] = [[tuple(item) for item in batch] for batch in partial["batches"]]
    return Resumed(record["epoch"], record["log"], record["seconds"], partial)


def clear_state(folder: Path) -> None:
    """Remove the state (the stage is complete)."""
    for name in (STATE, TENSORS):
        (folder / name).unlink(missing_ok=True)
