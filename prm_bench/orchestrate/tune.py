"""`prm-bench tune`: tune on a held-out split, then test once (docs/design.md, 3).

The protocol is wsolevaluation's (Choe et al., CVPR 2020): the free parameters of a
method are chosen on a tuning split that neither training nor the final evaluation uses,
and the chosen setting is evaluated once on the evaluation split, beside the default.

Each trial is one cell of the config's base (its grid is left out) with the trial's
values of the `search:` keys and `data.evaluate_on: tune`, run through the ordinary
runner on the store of the run it tunes: a search over retrieval keys trains and infers
once whatever the number of trials, one over inference keys trains once. The study
(`orchestrate.study`) lives in an Optuna storage (a SQLite file in the run directory by
default; any RDB URL lets several machines share it).

Layout under `runs/<name>/`: `store/` (shared with `prm-bench run`), `best.yaml`, and
`tuning/` with `study.db`, `study.json`, `trials.csv`, `trials/` (the trials' run
directory) and `test/` (default vs tuned on the evaluation split).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from prm_bench.atomic import write_atomic
from prm_bench.config import STAGES, Cell, ConfigError, Plan, apply_overrides, get_path
from prm_bench.config.search import Dimension, parse_space, with_values
from prm_bench.metrics import headline_metrics
from prm_bench.orchestrate.executors import Executor
from prm_bench.orchestrate.rundir import TUNING, run_lock
from prm_bench.orchestrate.runner import RunOptions, RunSummary, run_plan
from prm_bench.orchestrate.study import Study


class TuneFailed(RuntimeError):
    """Every trial of a call failed as many times as it was asked to finish: the cell
    itself fails (e.g. training diverges), so more trials would fail too."""


@dataclass(frozen=True)
class TuneRequest:
    """What to tune for.

    Attributes:
        trials: finished trials the study should hold (a resumed study runs the rest).
        metric: a headline value of the config's `eval.metrics` (e.g. mAP@0.5).
        direction: `maximize` or `minimize`.
        storage: an Optuna storage URL (default: SQLite in `runs/<name>/tuning`).
        seed: the sampler's base seed.
        evaluate: after tuning, run default and tuned once on the evaluation split.
        on_trial: called with (trial number, values, score or None when it failed).
    """

    trials: int = 20
    metric: str = "mAP@0.5"
    direction: str = "maximize"
    storage: str | None = None
    seed: int = 0
    evaluate: bool = False
    on_trial: Callable[[int, dict[str, Any], float | None], None] | None = None


@dataclass
class TuneSummary:
    """The end of `tune`: the study's best trial, what ran, and where things are."""

    run_dir: Path
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    trials: int
    failed: int
    executed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    seconds: float = 0.0
    best_config: Path | None = None
    test_dir: Path | None = None


def tune(
    plan: Plan,
    request: TuneRequest,
    options: RunOptions | None = None,
    executor: Executor | None = None,
) -> TuneSummary:
    """Run trials until the study holds `request.trials` finished ones, write `best.yaml`,
    and with `request.evaluate` test default and tuned once on the evaluation split.
    `plan` is `load_plan(config, overrides, use_grid=False)`: its `search` is the space
    and `plan.run.jobs` trials run together, one batch through the executor.

    Raises:
        ConfigError: no tuning split, a bad search space or metric, a mismatched study.
    """
    options = options or RunOptions()
    space = check_request(plan, request)
    run_dir = Path(options.runs_dir) / plan.name
    tuning = run_dir / TUNING
    tuning.mkdir(parents=True, exist_ok=True)
    storage = request.storage or f"sqlite:///{(tuning / 'study.db').resolve()}"
    started = time.perf_counter()
    with run_lock(run_dir):
        study = Study(plan.name, storage, Study.identity(request.metric, request.direction, space))
        trial = _TrialRunner(plan, run_dir, executor, replace(options, on_event=None))
        study.begin(uuid.uuid4().hex)
        try:
            executed = _run_trials(study, space, request, trial)
        finally:
            study.end()
        best = study.best
        summary = TuneSummary(
            run_dir, best.value, dict(best.params), best.number, study.finished, study.failed,
            executed,
        )  # fmt: skip
        summary.best_config = write_best(plan, summary, run_dir, request.metric)
        _write_study_files(study, plan, summary, request, space)
        if request.evaluate:
            summary.test_dir = _test_once(plan, summary, trial)
        summary.seconds = time.perf_counter() - started
        _record_seconds(tuning, summary.seconds)  # under the lock, like every study file
    return summary


def check_request(plan: Plan, request: TuneRequest) -> list[Dimension]:
    """The search space, once the tuning split, metric, direction and count are valid.

    Raises:
        ConfigError: one line naming what is wrong.
    """
    where = str(plan.source) if plan.source else "config"
    base = plan.cells[0].config
    if base.data.tune_split is None:
        raise ConfigError(
            f"{where}: data.tune_split is not set: name the held-out split trials are scored "
            "on (shapes: tune), which must differ from the evaluation split"
        )
    space = parse_space(plan.search, base, where)
    offered = headline_metrics(base.eval.metrics, base.eval)
    if request.metric not in offered:
        raise ConfigError(
            f"--metric {request.metric!r} is not reported by eval.metrics {base.eval.metrics} "
            f"(choose from {', '.join(offered)})"
        )
    if request.direction not in ("maximize", "minimize"):
        raise ConfigError(f"--direction must be maximize or minimize, got {request.direction!r}")
    if request.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {request.trials}")
    return space


@dataclass
class _TrialRunner:
    """Runs plans of trials (and the final test) through the runner, on the store of the
    tuned run (`runs/<name>/store`), inside `runs/<name>/tuning/`."""

    plan: Plan
    run_dir: Path
    executor: Executor | None
    options: RunOptions

    def run(self, name: str, cells: list[Cell], axis: str) -> RunSummary:
        """Run `cells` as the plan `name` (its run directory under `tuning/`)."""
        plan = Plan(source=self.plan.source, name=name, axes=[axis], cells=cells, run=self.plan.run)
        options = replace(
            self.options,
            runs_dir=self.run_dir / TUNING,
            store_dir=self.run_dir / "store",
            cache_dir=self.options.data_cache,
        )
        return run_plan(plan, options, self.executor)

    def trials(self, batch: list[tuple[Any, dict[str, Any]]]) -> RunSummary:
        """A batch of trials, each a cell of the base evaluated on the tune split."""
        base = self.plan.cells[0].config
        cells = [
            Cell(
                index=i,
                axes={"trial": t.number, **values},
                config=with_values(base, {**values, "data.evaluate_on": "tune"}),
            )
            for i, (t, values) in enumerate(batch)
        ]
        return self.run("trials", cells, "trial")


def _run_trials(
    study: Study, space: list[Dimension], request: TuneRequest, runner: _TrialRunner
) -> dict[str, int]:
    """Ask, run and tell batches until `request.trials` trials finished; the stage runs."""
    executed = dict.fromkeys(STAGES, 0)
    failures = 0
    while (done := study.finished) < request.trials:
        if failures >= max(request.trials, 3) and done == 0:
            reasons = "; ".join(study.failure_reasons())
            raise TuneFailed(f"{failures} trials failed and none finished: {reasons}")
        count = min(runner.plan.run.jobs, request.trials - done)
        batch = study.ask(space, request.seed, count)
        try:
            result = runner.trials(batch)
        except BaseException:
            study.abandon([trial for trial, _ in batch])
            raise
        for stage, runs in result.executed.items():
            executed[stage] += runs
        failures += _tell(study, batch, result, request)
    return executed


def _tell(study: Study, batch: list, result: RunSummary, request: TuneRequest) -> int:
    """Record the batch's scores in the study; returns how many trials failed."""
    failed = 0
    frame = result.results
    for index, (trial, values) in enumerate(batch):
        rows = (
            frame[(frame["cell"] == index) & (frame["metric"] == request.metric)]
            if frame is not None and not frame.empty
            else []
        )
        score = float(rows["value"].iloc[0]) if len(rows) else float("nan")
        if index in result.failed_cells or not math.isfinite(score):
            reason = result.failed_cells.get(index, f"{request.metric} is not a number")
            study.tell(trial, None, reason)
            score = None
            failed += 1
        else:
            study.tell(trial, score)
        if request.on_trial is not None:
            request.on_trial(trial.number, values, score)
    return failed


def write_best(plan: Plan, summary: TuneSummary, run_dir: Path, metric: str) -> Path:
    """`runs/<name>/best.yaml`: the tuned config, extending the tuned one (no grid)."""
    tree = apply_overrides({}, plan.overrides)
    tree = apply_overrides(tree, {**summary.best_params, "run.name": f"{plan.name}-best"})
    source = Path(plan.source).resolve() if plan.source else None
    header = [
        f"# prm-bench tune: the best of {summary.trials} trials on the "
        f"'{plan.cells[0].config.data.tune_split}' split",
        f"# ({metric} = {summary.best_value:.4f}, trial {summary.best_trial}). Test it once on "
        "the evaluation split:",
        f"#   prm-bench run {run_dir / 'best.yaml'}",
        "# (`prm-bench tune ... --evaluate` does that on the tuned run's store).",
    ]
    body: dict[str, Any] = {}
    if source is not None:
        body["extends"] = os.path.relpath(source, run_dir.resolve())
    body["grid"] = {}  # the tuned base alone, not the parent's grid
    body |= tree
    text = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)
    path = run_dir / "best.yaml"
    write_atomic(path, text.encode())  # an interrupted write leaves the last best.yaml whole
    return path


def _write_study_files(
    study: Study, plan: Plan, summary: TuneSummary, request: TuneRequest, space: list[Dimension]
) -> None:
    tuning = summary.run_dir / TUNING
    write_atomic(tuning / "trials.csv", study.trials_frame().to_csv(index=False).encode())
    base = plan.cells[0].config
    record = {
        "study": plan.name,
        "storage": study.storage,
        "source": str(plan.source) if plan.source else None,
        "metric": request.metric,
        "direction": request.direction,
        "tune_split": base.data.tune_split,
        "eval_split": base.data.eval_split,
        "space": {d.key: d.describe() for d in space},
        "defaults": {d.key: get_path(base.model_dump(mode="json"), d.key) for d in space},
        "best": {
            "trial": summary.best_trial,
            "value": summary.best_value,
            "params": summary.best_params,
        },
        "trials": summary.trials,
        "failed": summary.failed,
        "stage_runs": summary.executed,
    }
    record["seconds"] = read_study_record(tuning).get("seconds", 0.0)
    write_atomic(tuning / "study.json", (json.dumps(record, indent=2) + "\n").encode())


def read_study_record(tuning: Path) -> dict:
    """`study.json` of a tuning folder, or {} when there is none (or it is unreadable)."""
    try:
        return json.loads((tuning / "study.json").read_text())
    except (OSError, ValueError):
        return {}


def _record_seconds(tuning: Path, seconds: float) -> None:
    record = read_study_record(tuning)
    if record:
        record["seconds"] = record.get("seconds", 0.0) + seconds
        write_atomic(tuning / "study.json", (json.dumps(record, indent=2) + "\n").encode())


def _test_once(plan: Plan, summary: TuneSummary, runner: _TrialRunner) -> Path:
    """Default and tuned, once each, on the evaluation split (one plan, shared store)."""
    base = plan.cells[0].config
    cells = [
        Cell(index=0, axes={"variant": "default"}, config=base),
        Cell(index=1, axes={"variant": "tuned"}, config=with_values(base, summary.best_params)),
    ]
    result = runner.run("test", cells, "variant")
    for stage, count in result.executed.items():
        summary.executed[f"test {stage}"] = count
    return summary.run_dir / TUNING / "test"
