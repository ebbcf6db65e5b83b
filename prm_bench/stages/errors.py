"""Why a stage failed, in words the user should read."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class StageError(RuntimeError):
    """A stage that cannot finish for a reason the user should read (e.g. a NaN loss)."""


def describe_failure(err: Exception) -> str:
    """Why a stage failed, in one line: a `StageError`'s own message, else the
    exception's type and message (no traceback)."""
    if isinstance(err, StageError):
        return str(err)
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA where available, else CPU (torch is imported here: planning a run
    on the CPU or with `auto` never needs it)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("device cuda was asked for but no CUDA device is available")
    return torch.device(name)
