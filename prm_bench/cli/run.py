"""`prm-bench run` and `prm-bench tune`: load a plan once (run settings resolved from the
config and the command line together), check its inputs, then execute it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from prm_bench.cli.app import (
    DEVICE_OPTION,
    EXECUTOR_OPTION,
    OVERRIDES_OPTION,
    RUNS_DIR_OPTION,
    SCHEDULER_OPTION,
    Device,
    ExecutorName,
    app,
    console,
    exit_interrupted,
    fail,
    plain,
)
from prm_bench.errors import ConfigError

# torch and the registries load when a command runs, never at import: `prm-bench --help`
# and `--version` answer at once (each function imports what it uses)
if TYPE_CHECKING:
    from prm_bench.config import Plan
    from prm_bench.orchestrate.tune import TuneSummary

PROGRESS_COLUMNS = (
    TextColumn("{task.description:<9}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("elapsed"),
    TimeElapsedColumn(),
    TextColumn("left"),
    TimeRemainingColumn(),
)


# `--set a=1 b=2`: the key=value words after one --set reach the command as extra words
EXTRA_OVERRIDES = {"allow_extra_args": True}
SHOWN_CELLS = 50  # a dry run lists this many cells, then counts the rest


def _extra_overrides(ctx: typer.Context) -> list[str]:
    """The extra words of the command line, each a `section.key=value` override (Hydra's
    habit: several after one `--set`).

    Raises:
        ConfigError: a word that is no override.
    """
    for word in ctx.args:
        if "=" not in word or word.startswith("-"):
            raise ConfigError(
                f"unexpected argument {word!r}: give overrides as section.key=value after --set"
            )
    return list(ctx.args)


def _check_writable(runs_dir: Path, create: bool = True) -> None:
    """Refuse a --runs-dir that is a file or that cannot be written; made unless not
    `create` (a dry run writes nothing: the nearest existing folder must be writable)."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"--runs-dir {runs_dir} is a file, not a folder")
    if not create:
        existing = next(
            p for p in (runs_dir.absolute(), *runs_dir.absolute().parents) if p.exists()
        )
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"--runs-dir {runs_dir} cannot be created: {existing} is not writable"
            )
        return
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--runs-dir {runs_dir} cannot be created: {err.strerror}") from None
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--runs-dir {runs_dir} is not writable")


def _load(
    ctx: typer.Context,
    config: Path,
    overrides: list[str],
    use_grid: bool,
    settings: dict,
    runs_dir: Path,
) -> Plan:
    """The plan of `config`, the command line's run settings (None: the config's) on top,
    with its inputs checked and the runs folder writable; a user mistake exits 2.

    Takes six parameters: what `run` and `tune` both read from their command line."""
    from prm_bench.config import load_plan
    from prm_bench.data.base import DataError
    from prm_bench.orchestrate.preflight import preflight
    from prm_bench.orchestrate.rundir import check_owner
    from prm_bench.orchestrate.runner import RunOptions

    try:
        plan = load_plan(config, [*overrides, *_extra_overrides(ctx)], use_grid=use_grid)
        dry_run = settings.pop("dry_run", False)
        named = {k: (v.value if hasattr(v, "value") else v) for k, v in settings.items()}
        plan = plan.with_run(**named)
        plan = preflight(plan, RunOptions(runs_dir).data_cache, dry_run=dry_run)
        _check_writable(runs_dir, create=not dry_run)
        check_owner(runs_dir / plan.name, plan)
    except (ConfigError, DataError) as err:
        fail(err)
    return plan


def _print_plan(plan: Plan, run_dir: Path) -> None:
    """The plan's stages to run and in store, and a note on cells it drops."""
    from prm_bench.orchestrate.rundir import cells_not_in
    from prm_bench.orchestrate.runner import plan_tasks
    from prm_bench.stages.store import Store

    levels = plan_tasks(plan, Store(run_dir / "store"))
    table = Table(
        title=f"plan {plan.name}: {len(plan.cells)} cells -> {run_dir}", title_justify="left"
    )
    for column in ("stage", "to run", "in store"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for level in levels:
        done = sum(t.done for t in level)
        table.add_row(level[0].stage, str(len(level) - done), str(done))
    console.print(table)
    dropped = cells_not_in(run_dir, plan)
    if dropped:
        console.print(
            f"[yellow]note:[/] {run_dir} holds {dropped} cells that this plan does not: "
            "results.csv and the manifest will list this plan's cells only (the other cells' "
            "stages stay in the store; rerun their config to list them again)"
        )


def _progress_events(progress: Progress) -> Callable[[str, dict], None]:
    """A `run_plan` event handler that drives one progress bar per stage."""
    bars: dict[str, TaskID] = {}

    def report(kind: str, info: dict) -> None:
        if kind == "stage":
            bars[info["stage"]] = progress.add_task(info["stage"], total=max(info["todo"], 1))
            if not info["todo"]:
                why = "skipped: upstream failed" if info["skipped"] else "cached"
                progress.update(
                    bars[info["stage"]], completed=1, description=f"{info['stage']} ({why})"
                )
        elif kind == "recovered":
            progress.console.print(f"[yellow]recovered:[/] {plain(info['line'])}")
        else:
            task = info["task"]
            progress.advance(bars[task.stage])
            if not task.ok:
                progress.console.print(
                    f"[red]{task.stage} {task.key} failed[/]: {plain(task.error)}"
                )

    return report


@app.command(context_settings=EXTRA_OVERRIDES)
def run(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. ablations/quick.yaml."),
    overrides: list[str] = OVERRIDES_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    jobs: int = typer.Option(None, min=1, help="Parallel tasks per stage (default: run.jobs)."),
    device: Device = DEVICE_OPTION,
    runs_dir: Path = RUNS_DIR_OPTION,
    executor: ExecutorName = EXECUTOR_OPTION,
    scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Train, infer, retrieve and evaluate every cell of a grid, reusing finished stages.

    \f
    Takes nine parameters: the click context (for `--set a=1 b=2`) and each option."""
    from prm_bench.cli.live import LiveBars
    from prm_bench.orchestrate.executors import make_executor
    from prm_bench.orchestrate.preflight import dry_run_notes
    from prm_bench.orchestrate.rundir import RunLockedError, RunOutputError
    from prm_bench.orchestrate.runner import RunInterrupted, RunOptions, run_plan

    settings = {"jobs": jobs, "device": device, "executor": executor, "scheduler": scheduler}
    plan = _load(ctx, config, overrides, True, {**settings, "dry_run": dry_run}, runs_dir)
    run_dir = runs_dir / plan.name
    _print_plan(plan, run_dir)
    if dry_run:
        for note in dry_run_notes(plan).values():
            console.print(f"[yellow]note:[/] a run {note} first (this dry run wrote nothing)")
        for cell in plan.cells[:SHOWN_CELLS]:
            axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items()) or "the config as given"
            console.print(f"  cell {cell.index}: {plain(axes)}")
        if len(plan.cells) > SHOWN_CELLS:
            console.print(
                f"  ... and {len(plan.cells) - SHOWN_CELLS} more cells over the axes "
                + ", ".join(plan.axes)
            )
        return
    start = time.perf_counter()
    with (
        Progress(*PROGRESS_COLUMNS, console=console) as progress,
        LiveBars(progress, run_dir / "live"),
    ):
        try:
            options = RunOptions(runs_dir, on_event=_progress_events(progress))
            summary = run_plan(plan, options, make_executor(plan.run, run_dir / "slurm"))
        except (RunLockedError, RunOutputError, ValueError) as err:
            fail(err)
        except RunInterrupted as err:
            progress.stop()  # restores the terminal (cursor) before the hard exit
            console.print(f"[yellow]{plain(err)}[/]")
            exit_interrupted()
    finished = len(plan.cells) - len(summary.failed_cells)
    where = f"results in {run_dir / 'results.csv'}" if finished else "no results"
    console.print(
        f"{finished}/{len(plan.cells)} cells finished in "
        f"{time.perf_counter() - start:.1f} s; {where}"
    )
    _print_failures(summary.failed_cells)
    if summary.failed_cells:
        raise typer.Exit(1)


def _print_failures(failed: dict[int, str]) -> None:
    """Each reason once, with the cells it failed (one message, not one per cell)."""
    by_reason: dict[str, list[int]] = {}
    for cell, reason in sorted(failed.items()):
        by_reason.setdefault(reason, []).append(cell)
    for reason, cells in by_reason.items():
        which = f"cell {cells[0]}" if len(cells) == 1 else f"cells {', '.join(map(str, cells))}"
        console.print(f"[red]{which} failed[/]: {plain(reason)}")


@app.command(context_settings=EXTRA_OVERRIDES)
def tune(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Experiment YAML with a search: section."),
    trials: int = typer.Option(20, help="Finished trials the study should hold."),
    metric: str = typer.Option("mAP@0.5", help="The value to optimise (a headline metric)."),
    direction: str = typer.Option("maximize", help="maximize or minimize."),
    storage: str = typer.Option(
        None, help="Optuna storage URL (default: SQLite in runs/<name>/tuning)."
    ),
    evaluate: bool = typer.Option(
        False, "--evaluate", help="Then test default and tuned once on the evaluation split."
    ),
    overrides: list[str] = OVERRIDES_OPTION,
    jobs: int = typer.Option(1, min=1, help="Trials run together (one batch of tasks)."),
    seed: int = typer.Option(0, help="The sampler's base seed."),
    device: Device = DEVICE_OPTION,
    runs_dir: Path = RUNS_DIR_OPTION,
    executor: ExecutorName = EXECUTOR_OPTION,
    scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Tune the config's search: keys on data.tune_split with Optuna, then (--evaluate)
    test default and tuned once on the evaluation split. Stages are shared with `run`.

    \f
    Takes fourteen parameters: the click context (for `--set a=1 b=2`) and each option."""
    from prm_bench.data.base import DataError
    from prm_bench.orchestrate.executors import make_executor
    from prm_bench.orchestrate.rundir import RunLockedError, RunOutputError
    from prm_bench.orchestrate.runner import RunInterrupted, RunOptions
    from prm_bench.orchestrate.tune import TuneFailed, TuneRequest
    from prm_bench.orchestrate.tune import tune as run_tune

    settings = {"jobs": jobs, "device": device, "executor": executor, "scheduler": scheduler}
    plan = _load(ctx, config, overrides, False, settings, runs_dir)
    start = time.perf_counter()
    report = _trial_printer(metric)
    request = TuneRequest(trials, metric, direction, storage, seed, evaluate, report)
    try:
        workers = make_executor(plan.run, runs_dir / plan.name / "slurm")
        summary = run_tune(plan, request, RunOptions(runs_dir), workers)
    except (ConfigError, DataError, RunLockedError, RunOutputError, ValueError) as err:
        fail(err)
    except RunInterrupted as err:
        console.print(f"[yellow]{plain(err)}[/] (finished trials are kept in the study)")
        exit_interrupted()
    except TuneFailed as err:
        console.print(f"[red]error:[/] {plain(err)}")
        raise typer.Exit(1) from None
    _print_tuned(summary, metric, time.perf_counter() - start)


def _trial_printer(metric: str) -> Callable[[int, dict, float | None], None]:
    """One line per finished trial: its values and its score (or that it failed)."""

    def report(number: int, values: dict, score: float | None) -> None:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())  # fmt: skip
        outcome = f"{metric} {score:.4f}" if score is not None else "[red]failed[/]"
        console.print(f"trial {number}: {plain(shown)} -> {outcome}")

    return report


def _print_tuned(summary: TuneSummary, metric: str, seconds: float) -> None:
    runs = ", ".join(f"{stage} {count}" for stage, count in summary.executed.items())
    console.print(
        f"best of {summary.trials} trials ({summary.failed} failed): {metric} "
        f"{summary.best_value:.4f} with {plain(summary.best_params)} (trial {summary.best_trial}); "
        f"{seconds:.1f} s; stage runs: {runs}"
    )
    console.print(f"best config: {plain(summary.best_config)}")
    if summary.test_dir is not None:
        console.print(
            f"tested once on the evaluation split: {summary.test_dir / 'results.csv'} "
            f"(prm-bench report {summary.run_dir})"
        )
