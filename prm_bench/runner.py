"""Run a plan's cells through the stage DAG, reusing every stage already in the store.

Stages are executed level by level (every unique train key, then infer, retrieve,
evaluate), so cells that share a stage never race on it; within a level the tasks run in
parallel through joblib (local processes by default). A failing stage fails only the cells
that depend on it. The run directory holds the store, `manifest.json`, `results.csv` and
`results.parquet`; a lock keeps a second run off the same directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from prm_bench import __version__
from prm_bench.atomic import atomic_path
from prm_bench.config import Cell, ExperimentConfig, Plan
from prm_bench.data import generate_missing
from prm_bench.data.base import DataError, check_split
from prm_bench.executors import Executor, LocalExecutor
from prm_bench.metrics import protocol_of
from prm_bench.proposals import gallery_traits
from prm_bench.stages import GROUPED, RUNNERS, evaluate
from prm_bench.stages.common import (
    STAGES,
    StageError,
    describe_failure,
    open_split,
    open_training_data,
    resolve_device,
    stage_keys,
)
from prm_bench.stages.store import Store, write_atomic, write_json


class RunLockedError(RuntimeError):
    """Another run is using the run directory."""


class RunInterrupted(RuntimeError):
    """The run was stopped by SIGINT or SIGTERM; its finished stages are kept."""


INTERRUPTED = threading.Event()


class RunOutputError(OSError):
    """A run's output file could not be written (disk full, permissions); names the file."""


@dataclass
class Task:
    """One stage output to produce, for the cells that need it."""

    stage: str
    key: str
    cells: list[int]
    done: bool


@dataclass
class Outcome:
    """What happened to a task."""

    stage: str
    key: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class RunSummary:
    """The end of a run: per-cell status, stage counts and where results are."""

    run_dir: Path
    executed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    failed_cells: dict[int, str] = field(default_factory=dict)
    results: pd.DataFrame | None = None


def plan_tasks(plan: Plan, store: Store) -> list[list[Task]]:
    """Per stage (in DAG order) the unique tasks of the plan and whether each is done."""
    levels = []
    for stage in STAGES:
        tasks: dict[str, Task] = {}
        for cell in plan.cells:
            key = stage_keys(cell.config)[stage]
            tasks.setdefault(key, Task(stage, key, [], store.is_done(stage, key))).cells.append(
                cell.index
            )
        levels.append(list(tasks.values()))
    return levels


def execute_tasks(
    stage: str,
    configs: list[ExperimentConfig],
    store_root: str,
    device_name: str,
    slot: int,
    parent: int | None = None,
) -> list[Outcome]:
    """Run one stage for a group of configs (in a worker process), one outcome each;
    raises only on an interrupt. Several configs are run together through the stage's
    `GROUPED` entry; a lone config through its `RUNNERS` entry.

    `parent` is the pid of the process holding the run's lock: a worker orphaned by its
    death (kill -9) stops instead of recording a stage after the lock is gone."""
    keys = [stage_keys(config) for config in configs]
    store = Store(store_root, guard=_parent_alive(parent) if parent is not None else None)
    start = time.perf_counter()
    torch.set_num_threads(configs[0].run.threads)  # fixed whatever --jobs is: see RunConfig
    try:
        device = resolve_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", slot % max(torch.cuda.device_count(), 1))
        if len(configs) == 1:
            RUNNERS[stage](configs[0], store, keys[0], device)
            errors: list[str | None] = [None]
        else:
            errors = GROUPED[stage].run_cells(configs, store, keys, device)
    except StageError as err:
        errors = [describe_failure(err)] * len(configs)
    except Exception as err:  # a failing cell must not stop the others
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt from err  # an interrupt another library re-raised
        errors = [describe_failure(err)] * len(configs)
    share = (time.perf_counter() - start) / len(configs)  # a group's time, split evenly
    return [
        Outcome(stage, k[stage], error is None, share, error or "")
        for k, error in zip(keys, errors, strict=True)
    ]


def group_tasks(
    tasks: list[Task], configs: dict[int, ExperimentConfig], width: int
) -> list[list[Task]]:
    """The tasks of a stage level in groups run as one: tasks that share what the stage's
    `GROUPED` entry names go together, and the largest groups are halved until there are
    `width` groups (so parallel workers stay busy); other stages run a task per group."""
    if not tasks or tasks[0].stage not in GROUPED:
        return [[task] for task in tasks]
    shared_by = GROUPED[tasks[0].stage].shared_by
    groups: dict[tuple, list[Task]] = {}
    for task in tasks:
        keys = stage_keys(configs[task.cells[0]])
        groups.setdefault(shared_by(keys), []).append(task)
    split = list(groups.values())
    while len(split) < width and max(len(g) for g in split) > 1:
        largest = max(split, key=len)
        split.remove(largest)
        half = (len(largest) + 1) // 2
        split += [largest[:half], largest[half:]]
    return split


def _parent_alive(pid: int) -> Callable[[], None]:
    def check() -> None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise StageError(f"the run's process {pid} is gone: this orphaned task stops") from None
        except PermissionError:
            pass  # alive, owned by another user

    return check


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock, or refuse with a clear message."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunLockedError(
            f"another prm-bench run is using {run_dir}; wait for it to finish"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent, timeout=5,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    import numpy
    import timm
    import torch

    return {
        "prm_bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
    }


def collect_results(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per (cell, metric) of the finished cells: grid axes, seed, protocol, value."""
    rows = []
    for cell in plan.cells:
        key = stage_keys(cell.config)["evaluate"]
        if not store.is_done("evaluate", key):
            continue
        values = json.loads((store.path("evaluate", key) / evaluate.METRICS_FILE).read_text())
        base = {"cell": cell.index, **{axis: _plain(v) for axis, v in cell.axes.items()}}
        base["seed"] = cell.config.train.seed
        for metric, value in values.items():
            protocol = protocol_of(metric, cell.config.eval.metrics)
            rows.append({**base, "protocol": protocol, "metric": metric, "value": value})
    return pd.DataFrame(rows)


def _plain(value: Any) -> Any:
    return (
        value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    )


def _write_outputs(
    plan: Plan,
    store: Store,
    run_dir: Path,
    statuses: dict,
    seconds: dict,
    device: str,
    wall_seconds: float,
) -> pd.DataFrame:
    results = collect_results(plan, store)
    try:
        write_atomic(run_dir / "results.csv", results.to_csv(index=False).encode())
        with atomic_path(run_dir / "results.parquet") as tmp:
            results.to_parquet(tmp, index=False)
    except OSError as err:
        raise RunOutputError(
            f"cannot write the results in {run_dir}: {err.strerror or err}"
        ) from err
    manifest = {
        "name": plan.name,
        "source": str(plan.source) if plan.source else None,
        "command": sys.argv,  # the command line, --set overrides included
        "store": os.path.relpath(store.root, run_dir),
        "axes": plan.axes,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "device": device,
        "device_used": _device_used(device),
        "threads": torch.get_num_threads(),
        "wall_seconds": wall_seconds,
        "cells": [
            {
                "index": cell.index,
                "axes": cell.axes,
                "keys": stage_keys(cell.config),
                "status": statuses.get(cell.index, "pending"),
                "config": cell.config.model_dump(mode="json"),
            }
            for cell in plan.cells
        ],
        "stage_seconds": seconds,
    }
    try:
        write_json(run_dir / "manifest.json", manifest)
    except OSError as err:
        raise RunOutputError(
            f"cannot write {run_dir / 'manifest.json'}: {err.strerror or err}"
        ) from err
    return results


def _device_used(device: str) -> str:
    """What `auto` resolved to here (the device the stages of this process run on)."""
    try:
        return str(resolve_device(device))
    except StageError:
        return f"{device} (unavailable)"


Event = Callable[[str, dict[str, Any]], None]


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
        if gallery_traits(proposals.gallery).needs_root and (
            proposals.root is None or not proposals.root.is_dir()
        ):
            raise DataError(
                f"proposals.root {proposals.root} must be the folder of the "
                f"{proposals.gallery} files"
            )
        if data.generate:
            generate_missing(data.name, data.root)
        train_sizes = check_split(open_split(cell.config, "train"))
        check_split(open_split(cell.config, "eval", segmentation=True))
        if data.tune_split is not None:
            check_split(open_split(cell.config, "tune", segmentation=True))
            open_training_data(cell.config)  # refuses any overlap of the three splits
        shapes = sorted(set(train_sizes.values()))
        if data.image_size is None and len(shapes) > 1:
            shown = ", ".join(f"{w}x{h}" for h, w in shapes[:3])
            raise DataError(
                f"data.image_size is null but the {len(train_sizes)} training images of "
                f"{data.root} have {len(shapes)} sizes ({shown}, ...): training batches need "
                "one size, set data.image_size (e.g. 448)"
            )


class _RunLog:
    """Appends timestamped lines to `<run dir>/run.log`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        with open(self.path, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def run_plan(
    plan: Plan,
    runs_dir: str | Path = "runs",
    jobs: int | None = None,
    device: str | None = None,
    on_event: Event | None = None,
    executor: Executor | None = None,
    store_dir: str | Path | None = None,
) -> RunSummary:
    """Execute every stage the plan still needs and write the run's outputs.

    Args:
        plan: from `config.load_plan`.
        runs_dir: parent of the run directory `<runs_dir>/<plan.name>`.
        jobs: parallel tasks per stage level (default: the config's `run.jobs`).
        device: `auto`, `cpu` or `cuda` (default: the config's `run.device`).
        on_event: called with ("stage", info) and ("task", info) as work progresses.
        executor: where tasks run (`prm_bench.executors`); local joblib processes with
            `jobs` workers by default.
        store_dir: the stage store (default `<run dir>/store`); `prm-bench tune` points
            its trials at the store of the run they tune.
    """
    run_dir = Path(runs_dir) / plan.name
    first = plan.cells[0].config.run
    jobs = jobs or first.jobs
    device = device or first.device
    executor = executor or LocalExecutor(jobs)
    notify = on_event or (lambda kind, info: None)
    summary = RunSummary(run_dir)
    started = time.perf_counter()
    with run_lock(run_dir):
        log = _RunLog(run_dir / "run.log")
        where = type(executor).__name__
        log(f"run {plan.name}: {len(plan.cells)} cells, device {device}, executor {where}")
        store = Store(store_dir or run_dir / "store")
        configs = {cell.index: cell.config for cell in plan.cells}
        failed: dict[int, str] = {}
        seconds: dict[str, float] = {}
        # a manifest from the start: a run killed in its first stage is still a run directory
        _write_outputs(plan, store, run_dir, {}, seconds, device, 0.0)
        try:
            with _interrupts_raise():
                for level in plan_tasks(plan, store):
                    _run_level(level, configs, store, executor, device, failed, seconds,
                               summary, notify, log)  # fmt: skip
                    statuses = {c: ("failed" if c in failed else "running") for c in configs}
                    elapsed = time.perf_counter() - started
                    _write_outputs(plan, store, run_dir, statuses, seconds, device, elapsed)
        except KeyboardInterrupt:
            log("interrupted (SIGINT/SIGTERM): workers stopped, finished stages kept")
            raise RunInterrupted(
                f"interrupted; finished stages are kept in {run_dir / 'store'}: run the same "
                "command again to resume"
            ) from None
        statuses = {c: ("failed" if c in failed else "done") for c in configs}
        elapsed = time.perf_counter() - started
        summary.results = _write_outputs(plan, store, run_dir, statuses, seconds, device, elapsed)
        summary.failed_cells = failed
        log(f"finished: {len(configs) - len(failed)}/{len(configs)} cells")
    return summary


def _run_level(
    level: list[Task],
    configs: dict[int, ExperimentConfig],
    store: Store,
    executor: Executor,
    device: str,
    failed: dict[int, str],
    seconds: dict[str, float],
    summary: RunSummary,
    notify: Event,
    log: Callable[[str], None],
) -> None:
    """Run one stage's pending tasks (skipping cells that already failed upstream)."""
    stage = level[0].stage
    todo = [t for t in level if not t.done and not any(c in failed for c in t.cells)]
    summary.reused[stage] = sum(t.done for t in level)
    skipped = sum(not t.done for t in level) - len(todo)
    notify(
        "stage",
        {"stage": stage, "todo": len(todo), "reused": summary.reused[stage], "skipped": skipped},
    )
    log(f"{stage}: {len(todo)} to run, {summary.reused[stage]} reused, {skipped} skipped")
    # local workers watch this process (on other machines its pid means nothing)
    parent = os.getpid() if isinstance(executor, LocalExecutor) else None
    groups = group_tasks(todo, configs, getattr(executor, "jobs", 1))
    arguments = [
        (stage, [configs[t.cells[0]] for t in group], str(store.root), device, slot, parent)
        for slot, group in enumerate(groups)
    ]
    batches = executor.map(execute_tasks, arguments)
    try:
        for batch in batches:
            for outcome in batch:
                task = next(t for t in todo if t.key == outcome.key)
                seconds[f"{stage}/{outcome.key}"] = outcome.seconds
                if not outcome.ok:
                    for cell in task.cells:
                        failed.setdefault(cell, f"{stage} failed: {outcome.error}")
                notify("task", {"task": outcome, "cells": task.cells})
                state = "done" if outcome.ok else f"FAILED: {outcome.error}"
                log(f"{stage} {outcome.key} cells {task.cells} ({outcome.seconds:.1f} s) {state}")
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # on an interrupt, joblib cancels the pending tasks and ends its workers
    summary.executed[stage] = len(todo)


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt (and set `INTERRUPTED`, so a task
    whose library turned the interrupt into another exception is not counted as failed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    INTERRUPTED.clear()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def store_of(run_dir: Path) -> Store:
    """The stage store a run directory's manifest names (`<run dir>/store` by default;
    a tuning run's trials use the store of the run they tune)."""
    try:
        relative = json.loads((run_dir / "manifest.json").read_text()).get("store", "store")
    except (OSError, ValueError):
        relative = "store"
    return Store((run_dir / relative).resolve() if relative != "store" else run_dir / "store")


def environments(plan: Plan, run_dir: Path) -> dict[str, list[str]]:
    """The finished stages of a plan grouped by the environment they were computed in;
    more than one group means a resume mixed environments (threads, versions, device)."""
    store = store_of(run_dir)
    stages = {(s, stage_keys(c.config)[s]) for c in plan.cells for s in STAGES}
    done = [(s, k) for s, k in sorted(stages) if (store.path(s, k) / "done.json").is_file()]
    return store.environments(done)


def stage_status(plan: Plan, run_dir: Path) -> list[dict[str, Any]]:
    """Per cell, which of its stages are in the store."""
    store = store_of(run_dir)
    rows = []
    for cell in plan.cells:
        keys = stage_keys(cell.config)
        rows.append(
            {
                "cell": cell.index,
                "axes": cell.axes,
                **{s: store.is_done(s, keys[s]) for s in STAGES},
            }
        )
    return rows


def plan_from_manifest(run_dir: Path) -> Plan:
    """The plan a run directory was made from (its resolved cells)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cells = [
        Cell(index=c["index"], axes=c["axes"], config=ExperimentConfig.model_validate(c["config"]))
        for c in manifest["cells"]
    ]
    return Plan(
        source=manifest["source"], name=manifest["name"], axes=manifest["axes"], cells=cells
    )
