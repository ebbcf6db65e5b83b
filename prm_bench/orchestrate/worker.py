"""What runs inside a worker process: one stage for a group of cells."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prm_bench import progress
from prm_bench.config import Cell
from prm_bench.stages.errors import StageError, describe_failure, resolve_device
from prm_bench.stages.store import Store

# set by the runner's signal handler: a task whose library turned the interrupt into
# another exception is then not counted as a failure
INTERRUPTED = threading.Event()


@dataclass(frozen=True)
class Outcome:
    """What happened to a task."""

    stage: str
    key: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class Placement:
    """Where a task runs: the device name, CPU threads, the worker's slot (its GPU on a
    multi-GPU machine) and the pid of the process holding the run's lock (None where that
    pid means nothing, e.g. on another machine)."""

    device: str
    threads: int
    slot: int = 0
    parent: int | None = None
    log: str | None = None  # the run's run.log: stage progress lines go there too


def execute_tasks(
    stage: str, cells: list[Cell], store_root: str, where: Placement
) -> list[Outcome]:
    """Run one stage for a group of cells (in a worker process), one outcome each;
    raises only on an interrupt. Several cells run together through the stage's
    `GROUPED` entry; a lone cell through its `RUNNERS` entry.

    A worker orphaned by the death of `where.parent` (kill -9) stops instead of
    recording a stage after the lock is gone."""
    import torch  # the process that computes loads torch and the stages; planning does not

    from prm_bench.stages.runners import GROUPED, RUNNERS

    guard = _parent_alive(where.parent) if where.parent is not None else None
    if where.parent is not None and where.parent == os.getppid():  # a pool worker of the run
        watch_parent(where.parent)
    store = Store(store_root, guard=guard)
    start = time.perf_counter()
    torch.set_num_threads(where.threads)  # fixed whatever --jobs is: see RunSettings
    progress.install(_reporter(where.log), live_folder(where.log))
    configs, keys = [c.config for c in cells], [c.keys for c in cells]
    try:
        device = resolve_device(where.device)
        if device.type == "cuda":  # one GPU per slot: --jobs N spreads tasks over N GPUs
            device = torch.device("cuda", where.slot % max(torch.cuda.device_count(), 1))
        task = ", ".join(sorted({k[stage] for k in keys}))
        progress.report(
            f"{stage} {task}: on {device} (slot {where.slot}, pid {os.getpid()}, "
            f"{where.threads} threads)"
        )
        if len(cells) == 1:
            RUNNERS[stage](configs[0], store, keys[0], device)
            errors: list[str | None] = [None]
        else:
            errors = GROUPED[stage].run_cells(configs, store, keys, device)
    except StageError as err:
        errors = [describe_failure(err)] * len(cells)
    except Exception as err:  # a failing cell must not stop the others
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt from err  # an interrupt another library re-raised
        errors = [describe_failure(err)] * len(cells)
    share = (time.perf_counter() - start) / len(cells)  # a group's time, split evenly
    return [
        Outcome(stage, k[stage], error is None, share, error or "")
        for k, error in zip(keys, errors, strict=True)
    ]


def live_folder(log: str | None) -> Path | None:
    """Where the tasks of the run whose run.log is `log` keep their loops' positions."""
    return None if log is None else Path(log).parent / "live"


def _reporter(log: str | None) -> Callable[[str], None] | None:
    """Progress lines appended to the run's log and printed plainly off a terminal (the
    job's own log: a SLURM or joblib worker's output); on a terminal the bars show it."""
    if log is None:
        return None
    plain = not sys.stderr.isatty()

    def report(line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        try:
            with open(log, "a") as file:
                file.write(stamped + "\n")
        except OSError:
            pass  # a worker on another machine may not see the run's folder
        if plain:
            print(stamped, file=sys.stderr, flush=True)

    return report


_WATCHED: set[int] = set()


def watch_parent(parent: int, every: float = 1.0) -> None:
    """End this worker process within `every` seconds of the death of the run's process
    (kill -9 included), whether a task is running or the worker waits idle for the next:
    a pool of orphans would otherwise live on for minutes and keep writing. Started once
    per worker process and parent: by the pool as each worker starts (`LocalExecutor`),
    and with a worker's first task (other pools)."""
    if parent in _WATCHED:
        return
    _WATCHED.add(parent)
    check = _parent_alive(parent)

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                check()
            except StageError:
                os._exit(1)  # the run is gone: nothing this worker does can be recorded

    threading.Thread(target=watch, name="prm-bench-parent-watch", daemon=True).start()


def _parent_alive(pid: int) -> Callable[[], None]:
    def check() -> None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise StageError(f"the run's process {pid} is gone: this orphaned task stops") from None
        except PermissionError:
            pass  # alive, owned by another user

    return check
