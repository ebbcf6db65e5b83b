"""Run a plan's cells through the stage DAG, reusing every stage already in the store.

Stages are executed level by level (every unique train key, then infer, retrieve,
evaluate), so cells that share a stage never race on it; within a level the tasks go to
the executor (local joblib processes by default). A failing stage fails only the cells
that depend on it. The run directory (`orchestrate.rundir`) holds the store, the
manifest, the results and the log; a lock keeps a second run off it.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prm_bench.config import STAGES, Cell, Plan, RunSettings
from prm_bench.orchestrate.executors import Executor, LocalExecutor, make_executor
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.rundir import RunLog, run_lock, write_outputs
from prm_bench.orchestrate.worker import INTERRUPTED, Outcome, Placement, execute_tasks
from prm_bench.stages.store import Store

if TYPE_CHECKING:
    import pandas as pd


class RunInterrupted(RuntimeError):
    """The run was stopped by SIGINT or SIGTERM; its finished stages are kept."""


@dataclass
class Task:
    """One stage output to produce, for the cells that need it."""

    stage: str
    key: str
    cells: list[int]
    done: bool


Event = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class RunOptions:
    """Where a run writes and who hears of its progress.

    Attributes:
        runs_dir: parent of the run directory `<runs_dir>/<plan.name>`.
        store_dir: the stage store (default `<run dir>/store`); `prm-bench tune` points
            its trials at the store of the run they tune.
        on_event: called with ("stage", info) and ("task", info) as work progresses.
        cache_dir: where the data's file indexes are kept (`data.fingerprint`; default
            `<runs_dir>/.cache`): an unchanged image is not decoded or read again.
    """

    runs_dir: Path = Path("runs")
    store_dir: Path | None = None
    on_event: Event | None = None
    cache_dir: Path | None = None

    @property
    def data_cache(self) -> Path:
        """The folder of the data's file indexes."""
        return self.cache_dir or Path(self.runs_dir) / ".cache"


@dataclass
class RunSummary:
    """The end of a run: per-cell status, stage counts and where results are; `plan`
    is the plan as run, its keys bound to the data (`orchestrate.preflight.bind_data`)."""

    run_dir: Path
    plan: Plan | None = None
    executed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    failed_cells: dict[int, str] = field(default_factory=dict)
    results: pd.DataFrame | None = None


@dataclass
class _Level:
    """What one stage level did: tasks run and reused, cells that failed, seconds."""

    executed: int
    reused: int
    failed: dict[int, str]
    seconds: dict[str, float]


def plan_tasks(plan: Plan, store: Store) -> list[list[Task]]:
    """Per stage (in DAG order) the unique tasks of the plan and whether each is done."""
    levels = []
    for stage in STAGES:
        tasks: dict[str, Task] = {}
        for cell in plan.cells:
            key = cell.keys[stage]
            tasks.setdefault(key, Task(stage, key, [], store.is_done(stage, key))).cells.append(
                cell.index
            )
        levels.append(list(tasks.values()))
    return levels


def group_tasks(tasks: list[Task], cells: dict[int, Cell], width: int) -> list[list[Task]]:
    """The tasks of a stage level in groups run as one: tasks that share what the stage's
    `GROUPED` entry names go together, and the largest groups are halved until there are
    `width` groups (so parallel workers stay busy); other stages run a task per group."""
    from prm_bench.stages.runners import GROUPED  # the stages, with torch: a run computes

    if not tasks or tasks[0].stage not in GROUPED:
        return [[task] for task in tasks]
    shared_by = GROUPED[tasks[0].stage].shared_by
    groups: dict[tuple, list[Task]] = {}
    for task in tasks:
        groups.setdefault(shared_by(cells[task.cells[0]].keys), []).append(task)
    split = list(groups.values())
    while len(split) < width and max(len(g) for g in split) > 1:
        largest = max(split, key=len)
        split.remove(largest)
        half = (len(largest) + 1) // 2
        split += [largest[:half], largest[half:]]
    return split


def run_plan(
    plan: Plan, options: RunOptions | None = None, executor: Executor | None = None
) -> RunSummary:
    """Execute every stage the plan still needs and write the run's outputs.

    Args:
        plan: from `config.load_plan`; `plan.run` says the device, jobs and threads.
        options: where to write and whom to tell (`RunOptions`).
        executor: where tasks run (`orchestrate.executors`); by default the one
            `plan.run.executor` names, with `plan.run.jobs` workers.
    """
    options = options or RunOptions()
    run_dir = Path(options.runs_dir) / plan.name
    executor = executor or make_executor(plan.run, run_dir / "slurm")
    notify = options.on_event or (lambda kind, info: None)
    started = time.perf_counter()
    with run_lock(run_dir):
        if not plan.data_bound:  # the CLI's preflight bound it; a tune trial or an API call
            plan = bind_data(plan, options.data_cache)
        summary, log = RunSummary(run_dir, plan), RunLog(run_dir / "run.log")
        shutil.rmtree(run_dir / "live", ignore_errors=True)  # a killed run's positions
        where = type(executor).__name__
        log(f"run {plan.name}: {len(plan.cells)} cells, device {plan.run.device}, executor {where}")
        store = Store(options.store_dir or run_dir / "store")
        cells = {cell.index: cell for cell in plan.cells}
        context = _Context(cells, store, executor, plan.run, notify, log, str(log.path.resolve()))
        failed: dict[int, str] = {}
        seconds: dict[str, float] = {}
        # a manifest from the start: a run killed in its first stage is still a run directory
        write_outputs(plan, store, run_dir, {"statuses": dict.fromkeys(cells, "running")})
        try:
            with _interrupts_raise():
                levels = plan_tasks(plan, store)
                _name_damage(levels, context)
                for level in levels:
                    done = _run_level(level, context, failed)
                    summary.executed[level[0].stage] = done.executed
                    summary.reused[level[0].stage] = done.reused
                    failed |= {c: r for c, r in done.failed.items() if c not in failed}
                    seconds |= done.seconds
                    statuses = {c: ("failed" if c in failed else "running") for c in cells}
                    elapsed = time.perf_counter() - started
                    progress = {"statuses": statuses, "errors": failed, "seconds": seconds,
                                "wall_seconds": elapsed}  # fmt: skip
                    write_outputs(plan, store, run_dir, progress)
        except KeyboardInterrupt:
            log("interrupted (SIGINT/SIGTERM): workers stopped, finished stages kept")
            raise RunInterrupted(
                f"interrupted; finished stages are kept in {run_dir / 'store'}: run the same "
                "command again to resume"
            ) from None
        statuses = {c: ("failed" if c in failed else "done") for c in cells}
        progress = {
            "statuses": statuses, "errors": failed, "seconds": seconds,
            "wall_seconds": time.perf_counter() - started,
        }  # fmt: skip
        summary.results = write_outputs(plan, store, run_dir, progress)
        summary.failed_cells = failed
        log(f"finished: {len(cells) - len(failed)}/{len(cells)} cells")
    return summary


def _name_damage(levels: list[list[Task]], context: _Context) -> None:
    """Say, in run.log and to the event handler, which finished stages were found
    damaged and will be computed again (nothing is recomputed silently)."""
    for task in (t for level in levels for t in level if not t.done):
        reason = context.store.damage(task.stage, task.key)
        if reason is not None:
            line = f"{task.stage} {task.key} was done but {reason}: computing it again"
            context.log(line)
            context.notify("recovered", {"stage": task.stage, "key": task.key, "line": line})


@dataclass(frozen=True)
class _Context:
    """What every level of one run reads: its cells, store, executor and settings, and
    whom to tell."""

    cells: dict[int, Cell]
    store: Store
    executor: Executor
    run: RunSettings
    notify: Event
    log: Callable[[str], None]
    log_path: str | None = None

    def arguments(self, stage: str, groups: list[list[Task]]) -> list[tuple]:
        """One `execute_tasks` argument tuple per group of tasks."""
        # local workers watch this process (on other machines its pid means nothing)
        parent = os.getpid() if isinstance(self.executor, LocalExecutor) else None
        return [
            (stage, [self.cells[t.cells[0]] for t in group], str(self.store.root),
             Placement(self.run.device, self.run.threads, slot, parent, self.log_path))
            for slot, group in enumerate(groups)
        ]  # fmt: skip


def _run_level(level: list[Task], context: _Context, failed: dict[int, str]) -> _Level:
    """Run one stage's pending tasks, skipping cells that already failed upstream
    (`failed` is read, not changed: the level's own failures are in its result)."""
    stage = level[0].stage
    todo = [t for t in level if not t.done and not any(c in failed for c in t.cells)]
    result = _Level(len(todo), sum(t.done for t in level), {}, {})
    skipped = sum(not t.done for t in level) - len(todo)
    info = {"stage": stage, "todo": len(todo), "reused": result.reused, "skipped": skipped}
    context.notify("stage", info)
    context.log(f"{stage}: {len(todo)} to run, {result.reused} reused, {skipped} skipped")
    groups = group_tasks(todo, context.cells, getattr(context.executor, "jobs", 1))
    batches = context.executor.map(execute_tasks, context.arguments(stage, groups))
    try:
        for batch in batches:
            for outcome in batch:
                task = next(t for t in todo if t.key == outcome.key)
                _record(outcome, task, result)
                context.notify("task", {"task": outcome, "cells": task.cells})
                state = "done" if outcome.ok else f"FAILED: {outcome.error}"
                context.log(
                    f"{stage} {outcome.key} cells {task.cells} ({outcome.seconds:.1f} s) {state}"
                )
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # on an interrupt, joblib cancels the pending tasks and ends its workers
    return result


def _record(outcome: Outcome, task: Task, result: _Level) -> None:
    result.seconds[f"{outcome.stage}/{outcome.key}"] = outcome.seconds
    if not outcome.ok:
        for cell in task.cells:
            result.failed.setdefault(cell, f"{outcome.stage} failed: {outcome.error}")


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
