"""Where a stage tells how far it is.

- `report`: one plain line (a finished training epoch with its loss and ETA, a
  recovery), sent to the reporter the worker installed: the run's `run.log` and the
  worker's own output, so a SLURM job log has it too.
- `meter`: a long loop's position (a training's batches, an inference's images). It is
  kept in a small live file per task, `<run dir>/live/<stage>-<key>.json`, rewritten at
  most once a second, which the terminal's display reads (one bar per running task)
  and which is removed when the loop ends; and every `PRM_BENCH_PROGRESS_SECONDS`
  (default 30) a plain line goes to the reporter, for logs off a terminal.

With nothing installed both do nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prm_bench.atomic import write_atomic

_REPORTER: list[Callable[[str], None]] = []
_LIVE: list[Path] = []
LIVE_SECONDS = 1.0


def install(reporter: Callable[[str], None] | None, live: Path | None = None) -> None:
    """Send this process's stage lines to `reporter` and its loops' positions to the
    folder `live` (None: nowhere)."""
    _REPORTER[:] = [reporter] if reporter is not None else []
    _LIVE[:] = [Path(live)] if live is not None else []


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


class Meter:
    """The position of one long loop of a task (see the module's docstring)."""

    def __init__(self, label: str, total: int, first: int = 0) -> None:
        """`first`: the steps done before this process took the loop up (a resumed
        training's finished epochs); the pace and ETA count only the steps since."""
        self.label, self.total, self.first = label, max(total, 1), first
        self.path = _LIVE[0] / f"{label.replace(' ', '-')}.json" if _LIVE else None
        self.every = float(os.environ.get("PRM_BENCH_PROGRESS_SECONDS", "30"))
        self.start = time.monotonic()
        self._written = self._said = -float("inf")

    def tick(self, done: int, detail: str = "") -> None:
        """`done` of `total` steps are finished; `detail` says more (epoch, loss)."""
        now = time.monotonic()
        if self.path is not None and (now - self._written >= LIVE_SECONDS or done >= self.total):
            self._written = now
            record = {"label": self.label, "done": done, "total": self.total,
                      "first": self.first, "detail": detail,
                      "seconds": now - self.start, "pid": os.getpid()}  # fmt: skip
            with contextlib.suppress(OSError):  # a display aid: never fail a task over it
                write_atomic(self.path, json.dumps(record).encode())
        if _REPORTER and now - self._said >= self.every and done < self.total:
            if self._said > -float("inf"):  # not at the first step: no pace to tell yet
                left = eta(now - self.start, done - self.first, self.total - self.first)
                report(f"{self.label}: {done}/{self.total} {detail}, left {left}".strip())
            self._said = now


@contextlib.contextmanager
def meter(label: str, total: int, first: int = 0) -> Iterator[Meter]:
    """A `Meter` for the block; its live file is removed when the block ends."""
    position = Meter(label, total, first)
    try:
        yield position
    finally:
        if position.path is not None:
            position.path.unlink(missing_ok=True)


def read_live(folder: Path) -> list[dict]:
    """The positions the running tasks of a run left in `folder` (unreadable ones
    skipped: a file may be replaced while it is read)."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_text()))
    return found


# A preemption signal (SLURM's, through submitit) that arrives inside a training waits for
# the loop's next safe point (after a whole optimizer step), where the training saves its
# state mid-epoch; then the scheduler's own handler requeues the task. Outside a training
# the handler runs at once (every other stage keeps each finished image on disk anyway).
_PREEMPTION: dict = {"forward": None, "pending": False, "depth": 0}


def preemption_arrived(forward: Callable[[], None]) -> None:
    """A preemption signal came; `forward` hands it to the scheduler (requeue, exit). It
    runs now, or at the next `safe_point` when a training is in `deferring`."""
    if _PREEMPTION["depth"] > 0:
        _PREEMPTION["forward"], _PREEMPTION["pending"] = forward, True
    else:
        forward()


@contextlib.contextmanager
def deferring() -> Iterator[None]:
    """Within the block a preemption waits for `safe_point`."""
    _PREEMPTION["depth"] += 1
    try:
        yield
    finally:
        _PREEMPTION["depth"] -= 1
    if _PREEMPTION["depth"] == 0 and _PREEMPTION["pending"]:  # came after the last step
        _PREEMPTION["pending"] = False
        _PREEMPTION["forward"]()


def safe_point(save: Callable[[], None]) -> None:
    """Where a loop's state is whole: if a preemption is pending, `save` the state, say
    so, and hand the signal on (which requeues the task and does not return)."""
    if _PREEMPTION["pending"]:
        _PREEMPTION["pending"] = False
        save()
        report("preempted: state saved mid-epoch, handing over to the scheduler")
        _PREEMPTION["forward"]()
