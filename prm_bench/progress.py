"""Where a stage tells how far it is: one plain line per finished training epoch (loss, the
training's and its own ETA), sent to the reporter the worker installed (the run's
`run.log` and the worker's own output, so a SLURM job log has it too). Stages call
`report`; with no reporter installed it does nothing."""

from __future__ import annotations

from collections.abc import Callable

_REPORTER: list[Callable[[str], None]] = []


def install(reporter: Callable[[str], None] | None) -> None:
    """Send this process's stage lines to `reporter` (None: nowhere)."""
    _REPORTER[:] = [reporter] if reporter is not None else []


def report(line: str) -> None:
    """One line of progress, to the installed reporter."""
    for reporter in _REPORTER:
        reporter(line)


def eta(seconds: float, done: int, total: int) -> str:
    """What is left of `total` steps at the pace of the `done` taking `seconds`."""
    if done <= 0:
        return "-"
    left = int(seconds / done * (total - done))
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
