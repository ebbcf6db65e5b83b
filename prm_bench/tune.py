"""`prm-bench tune`: tune on a held-out split, then test once (DESIGN 3, Tuning).

The protocol is wsolevaluation's (Choe et al., CVPR 2020): the free parameters of a
method are chosen on a tuning split that neither training nor the final evaluation uses,
and the chosen setting is evaluated once on the evaluation split, beside the default.

Each trial is one cell of the config's base (its grid is left out) with the trial's
values of the `search:` keys and `data.evaluate_on: tune`, run through the ordinary
runner on the store of the run it tunes: a search over retrieval keys trains and infers
once whatever the number of trials, one over inference keys trains once. The study lives
in an Optuna storage (a SQLite file in the run directory by default; any RDB URL lets
several machines share it). Trials are sampled with a seed derived from the number of
finished trials, so a study interrupted and resumed samples what an uninterrupted one
would have.

Layout under `runs/<name>/`: `store/` (shared with `prm-bench run`), `best.yaml`, and
`tuning/` with `study.db`, `study.json`, `trials.csv`, `trials/` (the trials' run
directory) and `test/` (default vs tuned on the evaluation split).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from prm_bench.atomic import write_atomic
from prm_bench.config import Cell, ConfigError, ExperimentConfig, Plan, parse_override, set_path
from prm_bench.executors import Executor
from prm_bench.metrics import headline_metrics
from prm_bench.runner import run_lock, run_plan
from prm_bench.stages.common import STAGES

TUNING = "tuning"
_SPEC_KEYS = {"low", "high", "log", "step", "choices"}
_FIXED_SECTIONS = {"data", "eval", "run"}  # what a trial is scored by must not move
_ACTIVE: set[str] = set()  # tokens of the tune calls running in this process


@dataclass(frozen=True)
class Dimension:
    """One searched key: a numeric range (`low`..`high`, optionally log or stepped) or
    a list of `choices`."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple | None = None

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this key (an Optuna `Trial`)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            low, high, step = int(self.low), int(self.high), int(self.step or 1)
            return trial.suggest_int(self.key, low, high, step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        """The searched values, as the report shows them."""
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        scale = ", log" if self.log else (f", step {self.step:g}" if self.step else "")
        return f"[{self.low:g}, {self.high:g}{scale}]"


def _get(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def with_values(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """`config` with `values` ({section.key: value}) set and validated.

    Raises:
        ValidationError: a value the key does not take.
    """
    tree = config.model_dump(mode="json")
    for key, value in values.items():
        tree = set_path(tree, key.split("."), value)
    return ExperimentConfig.model_validate(tree)


def parse_space(search: dict[str, Any], base: ExperimentConfig, where: str) -> list[Dimension]:
    """The search space of a config's `search:` section, every bound checked against
    the config model before any trial runs.

    Raises:
        ConfigError: one line naming the key, the bad value and what is expected.
    """
    if not search:
        raise ConfigError(
            f"{where}: the config has no search section; add one, e.g. "
            "search: {retrieval.alpha: {low: 0.1, high: 2.0, log: true}}"
        )
    tree = base.model_dump(mode="json")
    space = []
    for key, spec in search.items():
        name = f"{where}: search.{key}"
        section = str(key).split(".")[0]
        if "." not in str(key):
            raise ConfigError(f"{name}: a searched key is section.key (e.g. retrieval.alpha)")
        try:
            current = _get(tree, key)
        except KeyError:
            raise ConfigError(f"{name}: unknown key (no such key in the config)") from None
        if section in _FIXED_SECTIONS:
            raise ConfigError(
                f"{name}: the {section} section cannot be searched (it decides what a trial "
                "is scored on); search train, infer, retrieval, proposals or method keys"
            )
        if not isinstance(spec, dict) or not spec or set(spec) - _SPEC_KEYS:
            raise ConfigError(
                f"{name}: expected a mapping with low and high (optional log, step) or with "
                f"choices, got {spec!r}"
            )
        space.append(_dimension(name, key, spec, current, base))
    return space


def _dimension(name: str, key: str, spec: dict, current: Any, base: ExperimentConfig) -> Dimension:
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{name}: choices must be a non-empty list, alone, got {spec!r}")
        for choice in choices:
            _check_value(name, key, choice, current, base)
        return Dimension(key, choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{name}: a range needs both low and high, got {spec!r}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for label, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and not _number(value):
            raise ConfigError(f"{name}.{label} must be a number, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{name}.log must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{name}: low {low!r} is above high {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{name}: a log range needs low > 0, got {low!r}")
    if log and step is not None:
        raise ConfigError(f"{name}: give log or step, not both")
    if step is not None and step <= 0:
        raise ConfigError(f"{name}.step must be > 0, got {step!r}")
    if not _number(current) and current is not None:
        shown = json.dumps(current)
        raise ConfigError(
            f"{name}: {key} is not a number (it holds {shown}); search it with choices"
        )
    integer = isinstance(current, int) and not isinstance(current, bool)
    if integer and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ConfigError(f"{name}: {key} takes integers, got low {low!r}, high {high!r}")
    for value in (low, high):
        _check_value(name, key, value, current, base)
    return Dimension(key, float(low), float(high), log, step, integer)


def _check_value(name: str, key: str, value: Any, current: Any, base: ExperimentConfig) -> None:
    try:
        with_values(base, {key: value})
    except ValidationError as err:
        problem = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {key} does not take {value!r} ({problem})") from None
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None


class TuneFailed(RuntimeError):
    """Every trial of a call failed as many times as it was asked to finish: the cell
    itself fails (e.g. training diverges), so more trials would fail too."""


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


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "prm-bench tune needs Optuna: pip install 'prm-bench[tune]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _trial_seed(seed: int, finished: int, position: int) -> int:
    return (seed * 1_000_003 + finished * 1_009 + position) % 2**32


def _owner(token: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def _is_stale(owner: str) -> bool:
    """Whether a RUNNING trial's owner is gone: a dead process on this host, or an ended
    tune call of this very process. Owners on other hosts are left alone."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return token not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _fail_stale(study: Any, optuna: Any) -> int:
    """Mark trials left RUNNING by a killed tune as failed (they are sampled again)."""
    stale = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if _is_stale(t.user_attrs.get("owner", ""))
    ]
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def _open_study(
    optuna: Any, plan: Plan, storage: str, metric: str, direction: str, space: list[Dimension]
) -> Any:
    study = optuna.create_study(
        study_name=plan.name, storage=storage, direction=direction, load_if_exists=True
    )
    identity = {
        "metric": metric,
        "direction": direction,
        "space": [d.__dict__ | {"choices": list(d.choices or [])} for d in space],
    }
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", json.loads(json.dumps(identity)))
    elif recorded != json.loads(json.dumps(identity)):
        raise ConfigError(
            f"the study {plan.name!r} in {storage} was made with another metric, direction or "
            "search space; resume it with the same ones, or remove it (or set run.name) to "
            "start a new study"
        )
    return study


def tune(
    plan: Plan,
    trials: int,
    metric: str = "mAP@0.5",
    runs_dir: str | Path = "runs",
    storage: str | None = None,
    jobs: int = 1,
    device: str | None = None,
    executor: Executor | None = None,
    seed: int = 0,
    direction: str = "maximize",
    evaluate: bool = False,
    on_trial: Callable[[int, dict[str, Any], float | None], None] | None = None,
) -> TuneSummary:
    """Run trials until the study holds `trials` finished ones, write `best.yaml`, and
    with `evaluate` test default and tuned once on the evaluation split.

    Args:
        plan: `load_plan(config, overrides, use_grid=False)`; its `search` is the space.
        trials: finished trials the study should hold (a resumed study runs the rest).
        metric: a headline value of the config's `eval.metrics` (e.g. mAP@0.5).
        storage: an Optuna storage URL (default: SQLite in `runs/<name>/tuning`).
        jobs: trials run together, one batch through the runner's executor.
        seed: the sampler's base seed.
        evaluate: after tuning, run default and tuned once on the evaluation split.
        on_trial: called with (trial number, values, score or None when it failed).

    Raises:
        ConfigError: no tuning split, a bad search space or metric, a mismatched study.
    """
    optuna = _import_optuna()
    base = plan.cells[0].config
    space = _check_request(plan, trials, metric, direction)
    run_dir = Path(runs_dir) / plan.name
    tuning = run_dir / TUNING
    tuning.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(tuning / 'study.db').resolve()}"
    started = time.perf_counter()
    with run_lock(run_dir):
        study = _open_study(optuna, plan, storage, metric, direction, space)
        _fail_stale(study, optuna)
        trial = _TrialRunner(plan, run_dir, jobs, device, executor)
        executed = _run_trials(study, optuna, space, trials, seed, metric, trial, on_trial)
        best = study.best_trial
        summary = TuneSummary(
            run_dir,
            best.value,
            dict(best.params),
            best.number,
            _finished(study, optuna),
            len(study.get_trials(states=(optuna.trial.TrialState.FAIL,))),
            executed,
        )
        summary.best_config = write_best(plan, summary, run_dir, metric)
        _write_study_files(study, plan, summary, storage, metric, direction, space, tuning)
        if evaluate:
            summary.test_dir = _test_once(plan, base, summary, tuning, jobs, device, executor)
        summary.seconds = time.perf_counter() - started
        _record_seconds(tuning, summary.seconds)  # under the lock, like every study file
    return summary


def _check_request(plan: Plan, trials: int, metric: str, direction: str) -> list[Dimension]:
    """The search space, once the tuning split, metric, direction and count are valid."""
    where = str(plan.source) if plan.source else "config"
    base = plan.cells[0].config
    if base.data.tune_split is None:
        raise ConfigError(
            f"{where}: data.tune_split is not set: name the held-out split trials are scored "
            "on (shapes: tune), which must differ from the evaluation split"
        )
    space = parse_space(plan.search, base, where)
    offered = headline_metrics(base.eval.metrics, base.eval)
    if metric not in offered:
        raise ConfigError(
            f"--metric {metric!r} is not reported by eval.metrics {base.eval.metrics} "
            f"(choose from {', '.join(offered)})"
        )
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"--direction must be maximize or minimize, got {direction!r}")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    return space


@dataclass
class _TrialRunner:
    """Runs a batch of trials as the cells of one plan through the runner, on the store
    of the tuned run (`runs/<name>/store`), evaluating on the tune split."""

    plan: Plan
    run_dir: Path
    jobs: int
    device: str | None
    executor: Executor | None

    def __call__(self, batch: list[tuple[Any, dict[str, Any]]]) -> Any:
        base = self.plan.cells[0].config
        cells = [
            Cell(
                index=i,
                axes={"trial": t.number, **values},
                config=with_values(base, {**values, "data.evaluate_on": "tune"}),
            )
            for i, (t, values) in enumerate(batch)
        ]
        trial_plan = Plan(source=self.plan.source, name="trials", axes=["trial"], cells=cells)
        return run_plan(
            trial_plan, self.run_dir / TUNING, jobs=self.jobs, device=self.device,
            executor=self.executor, store_dir=self.run_dir / "store",
        )  # fmt: skip


def _run_trials(
    study: Any,
    optuna: Any,
    space: list[Dimension],
    trials: int,
    seed: int,
    metric: str,
    run_batch: _TrialRunner,
    on_trial: Callable | None,
) -> dict[str, int]:
    """Ask, run and tell batches until `trials` trials finished; the stage runs made."""
    token = uuid.uuid4().hex
    executed = dict.fromkeys(STAGES, 0)
    failures = 0
    _ACTIVE.add(token)
    try:
        while (done := _finished(study, optuna)) < trials:
            if failures >= max(trials, 3) and done == 0:
                reasons = {t.user_attrs.get("failure", "?") for t in study.trials}
                raise TuneFailed(
                    f"{failures} trials failed and none finished: {'; '.join(reasons)}"
                )
            count = min(run_batch.jobs, trials - done)
            batch = _ask(study, optuna, space, seed, done, count, token)
            try:
                result = run_batch(batch)
            except BaseException:
                for trial, _ in batch:
                    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                raise
            for stage, runs in result.executed.items():
                executed[stage] += runs
            failures += _tell(study, optuna, batch, result, metric, on_trial)
    finally:
        _ACTIVE.discard(token)
    return executed


def _finished(study: Any, optuna: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _ask(
    study: Any, optuna: Any, space: list[Dimension], seed: int, done: int, count: int, token: str
) -> list[tuple[Any, dict[str, Any]]]:
    batch = []
    for position in range(count):
        # a fresh seeded sampler per trial: what it draws depends only on the finished
        # trials and the position in the batch, so a resumed study draws the same values
        study.sampler = optuna.samplers.TPESampler(seed=_trial_seed(seed, done, position))
        trial = study.ask()
        trial.set_user_attr("owner", _owner(token))
        batch.append((trial, {d.key: d.suggest(trial) for d in space}))
    return batch


def _tell(
    study: Any,
    optuna: Any,
    batch: list,
    result: Any,
    metric: str,
    on_trial: Callable | None,
) -> int:
    """Record the batch's scores in the study; returns how many trials failed."""
    failed = 0
    frame = result.results
    for index, (trial, values) in enumerate(batch):
        rows = (
            frame[(frame["cell"] == index) & (frame["metric"] == metric)]
            if frame is not None and not frame.empty
            else []
        )
        score = float(rows["value"].iloc[0]) if len(rows) else float("nan")
        if index in result.failed_cells or not math.isfinite(score):
            reason = result.failed_cells.get(index, f"{metric} is not a number")
            trial.set_user_attr("failure", reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            score = None
            failed += 1
        else:
            study.tell(trial, score)
        if on_trial is not None:
            on_trial(trial.number, values, score)
    return failed


def write_best(plan: Plan, summary: TuneSummary, run_dir: Path, metric: str) -> Path:
    """`runs/<name>/best.yaml`: the tuned config, extending the tuned one (no grid)."""
    tree: dict[str, Any] = {}
    for item in plan.overrides:
        key, value = parse_override(item)
        tree = set_path(tree, key, value)
    for key, value in summary.best_params.items():
        tree = set_path(tree, key.split("."), value)
    tree = set_path(tree, ["run", "name"], f"{plan.name}-best")
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
    study: Any,
    plan: Plan,
    summary: TuneSummary,
    storage: str,
    metric: str,
    direction: str,
    space: list[Dimension],
    tuning: Path,
) -> None:
    frame = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    write_atomic(tuning / "trials.csv", frame.to_csv(index=False).encode())
    base = plan.cells[0].config
    record = {
        "study": plan.name,
        "storage": storage,
        "source": str(plan.source) if plan.source else None,
        "metric": metric,
        "direction": direction,
        "tune_split": base.data.tune_split,
        "eval_split": base.data.eval_split,
        "space": {d.key: d.describe() for d in space},
        "defaults": {d.key: _get(base.model_dump(mode="json"), d.key) for d in space},
        "best": {
            "trial": summary.best_trial,
            "value": summary.best_value,
            "params": summary.best_params,
        },
        "trials": summary.trials,
        "failed": summary.failed,
        "stage_runs": summary.executed,
    }
    previous = _read_study_record(tuning)
    record["seconds"] = previous.get("seconds", 0.0)
    write_atomic(tuning / "study.json", (json.dumps(record, indent=2) + "\n").encode())


def _read_study_record(tuning: Path) -> dict:
    path = tuning / "study.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _record_seconds(tuning: Path, seconds: float) -> None:
    record = _read_study_record(tuning)
    if record:
        record["seconds"] = record.get("seconds", 0.0) + seconds
        write_atomic(tuning / "study.json", (json.dumps(record, indent=2) + "\n").encode())


def _test_once(
    plan: Plan,
    base: ExperimentConfig,
    summary: TuneSummary,
    tuning: Path,
    jobs: int,
    device: str | None,
    executor: Executor | None,
) -> Path:
    """Default and tuned, once each, on the evaluation split (one plan, shared store)."""
    tuned = with_values(base, summary.best_params)
    cells = [
        Cell(index=0, axes={"variant": "default"}, config=base),
        Cell(index=1, axes={"variant": "tuned"}, config=tuned),
    ]
    test_plan = Plan(source=plan.source, name="test", axes=["variant"], cells=cells)
    result = run_plan(
        test_plan, tuning, jobs=jobs, device=device, executor=executor,
        store_dir=tuning.parent / "store",
    )  # fmt: skip
    for stage, count in result.executed.items():
        summary.executed[f"test {stage}"] = count
    return tuning / "test"


def study_figures(tuning: Path, out: Path) -> list[str]:
    """Optuna's optimisation-history and parameter-importance plots (its matplotlib
    backend) saved as PNGs in `out`; the names of the files written."""
    optuna = _import_optuna()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    record = _read_study_record(tuning)
    study = optuna.load_study(study_name=record["study"], storage=record["storage"])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, draw in (
            ("tuning_history", plots.plot_optimization_history),
            ("tuning_importance", plots.plot_param_importances),
        ):
            try:
                axes = draw(study)
            except (ValueError, RuntimeError):
                continue  # importances need at least two finished trials that differ
            figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
            figure.set_size_inches(7, 4)
            figure.tight_layout()
            figure.savefig(out / f"{name}.png", dpi=110)
            plt.close(figure)
            written.append(f"{name}.png")
    return written


__all__ = [
    "Dimension",
    "TuneFailed",
    "TuneSummary",
    "parse_space",
    "study_figures",
    "tune",
    "with_values",
    "write_best",
]
