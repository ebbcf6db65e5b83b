"""The report's "tuned on <split>, tested once" section (`prm-bench tune`, DESIGN 3),
and the study's figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from prm_bench.atomic import write_text_atomic
from prm_bench.metrics import headline_metrics
from prm_bench.metrics.bootstrap import paired_bootstrap, supports
from prm_bench.orchestrate.rundir import TUNING, plan_from_manifest, store_of
from prm_bench.orchestrate.study import import_optuna, load_study
from prm_bench.orchestrate.tune import read_study_record
from prm_bench.report.figures import save
from prm_bench.report.markdown import shown_path
from prm_bench.report.tables import to_markdown
from prm_bench.stages.evaluate import STATISTICS_FILE, read_statistics

PROTOCOL = (
    "Protocol (wsolevaluation, Choe et al., CVPR 2020): the searched parameters are chosen "
    "on a held-out tuning split that training never sees and that is disjoint from the "
    "evaluation split; the default and the tuned setting are then evaluated once each on "
    "the evaluation split, with the same trained model, and the difference gets a paired "
    "bootstrap CI over the evaluation images."
)


def has_tuning(run_dir: Path) -> bool:
    """Whether `prm-bench tune` has written a study in this run directory."""
    return (Path(run_dir) / TUNING / "study.json").is_file()


def tuning_section(run_dir: Path, out: Path, resamples: int = 1000) -> list[str]:
    """Markdown lines of the tuning section; writes its tables and figures under `out`."""
    tuning = Path(run_dir) / TUNING
    record = json.loads((tuning / "study.json").read_text())
    split = record["tune_split"]
    lines = [f"## Tuned on `{split}`, tested once on `{record['eval_split']}`", "", PROTOCOL, ""]
    best = record["best"]
    runs = ", ".join(f"{stage} {count}" for stage, count in record["stage_runs"].items())
    lines += [
        f"- Study `{record['study']}`: {record['trials']} finished trials "
        f"({record['failed']} failed), {record['direction']} `{record['metric']}` on "
        f"`{split}`; best {best['value']:.4f} (trial {best['trial']}).",
        f"- Stage runs of the trials: {runs}; {record.get('seconds', 0.0):.0f} s in all.",
        "",
    ]
    space = pd.DataFrame(
        [
            {
                "key": key,
                "searched": searched,
                "default": record["defaults"].get(key),
                "tuned": _shown(best["params"].get(key)),
            }
            for key, searched in record["space"].items()
        ]
    )
    lines += [to_markdown(space), ""]
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    write_text_atomic(tables / "tuning_space.csv", space.to_csv(index=False))
    test = _test_table(tuning / "test", record["metric"], resamples)
    if test is not None:
        write_text_atomic(tables / "tuning_test.csv", test.to_csv(index=False))
        lines += [
            f"Default vs tuned on `{record['eval_split']}` (tested once; effect = tuned - "
            f"default in points, 95% CI, {resamples} resamples):",
            "",
            to_markdown(test),
            "",
        ]
        if test.empty:
            lines += ["Tuned and default give the same values on every image.", ""]
        if test.attrs.get("untouched"):
            shown = ", ".join(f"`{n}`" for n in test.attrs["untouched"])
            lines += [f"Identical on every image, so left out: {shown} (the search did not "
                      "change the stages they read).", ""]  # fmt: skip
    else:
        lines += ["Not tested on the evaluation split yet (`prm-bench tune ... --evaluate`).", ""]
    for name in study_figures(tuning, out / "figures"):
        lines += [f"![{name[:-4]}](figures/{name})", ""]
    return lines


def _shown(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def _test_table(test_dir: Path, metric: str, resamples: int) -> pd.DataFrame | None:
    if not (test_dir / "results.csv").is_file() or not (test_dir / "manifest.json").is_file():
        return None
    results = pd.read_csv(test_dir / "results.csv")
    plan = plan_from_manifest(test_dir)
    variants = {c.axes["variant"]: c for c in plan.cells}
    if set(variants) != {"default", "tuned"} or results.empty:
        return None
    store = store_of(test_dir)
    stats = {}
    for name, cell in variants.items():
        key = cell.keys["evaluate"]
        path = store.path("evaluate", key) / STATISTICS_FILE
        stats[name] = read_statistics(store, key) if path.is_file() else None
    options = variants["default"].config.eval
    names = headline_metrics(options.metrics, options)
    names = [metric, *[n for n in names if n != metric and n != "pointing_tolerance_px"]]
    rows, untouched = [], []
    for name in names:
        values = results[results["metric"] == name].set_index("cell")["value"]
        if len(values) != 2:
            continue
        default = 100 * values[variants["default"].index]
        tuned = 100 * values[variants["tuned"].index]
        row = {"metric": name, "default": f"{default:.1f}", "tuned": f"{tuned:.1f}"}
        if not all(s is not None and supports(s, name) for s in stats.values()):
            continue  # a verdict needs a CI, and a CI needs per-image statistics
        interval = paired_bootstrap([stats["tuned"]], [stats["default"]], name, resamples)
        if interval.low == interval.high == 0.0:
            untouched.append(name)  # a metric the searched keys cannot move
            continue
        row |= {
            "effect [95% CI]": f"{100 * interval.effect:+.1f} "
            f"[{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]",
            "verdict (tuned better)": interval.verdict(),
        }
        rows.append(row)
    columns = ["metric", "default", "tuned", "effect [95% CI]", "verdict (tuned better)"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["untouched"] = untouched
    return frame


def build_tuning_report(
    run_dir: str | Path, out: str | Path | None = None, resamples: int = 1000
) -> Path:
    """A report of the tuning study alone (a run directory where only `tune` ran)."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    record = json.loads((run_dir / TUNING / "study.json").read_text())

    lines = [
        f"# prm-bench tuning report: {record['study']}",
        "",
        f"- Config: `{shown_path(record.get('source'))}`; search and study in "
        f"`{run_dir / TUNING}`; the tuned config is `{run_dir / 'best.yaml'}`.",
        "",
        *tuning_section(run_dir, out, resamples),
    ]
    write_text_atomic(out / "README.md", "\n".join(lines))
    return out


def study_figures(tuning: Path, out: Path) -> list[str]:
    """The study's optimisation history and parameter importances, drawn with the figure
    API and saved as PNG and PDF in `out`; the PNG names written. Values are in % like
    the tables."""
    record = read_study_record(tuning)
    study = load_study(record["study"], record["storage"])
    trials = [t for t in study.trials if t.value is not None]
    if not trials:
        return []
    written = [_history(trials, record, out)]
    importances = _importances(study)
    if importances:
        written.append(_importance_bars(importances, record, out))
    return written


def _history(trials: list, record: dict, out: Path) -> str:
    numbers = [t.number for t in trials]
    values = np.array([100 * t.value for t in trials])
    best = np.maximum.accumulate(values) if record["direction"] == "maximize" else (
        np.minimum.accumulate(values))  # fmt: skip
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    axes.plot(numbers, values, "o", color="tab:blue", label="trial")
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{record['metric']} on {record['tune_split']} (%)")
    axes.set_title(f"Tuning history ({record['direction']} {record['metric']})")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(loc="lower right", frameon=False)
    figure.tight_layout()
    save(figure, out, "tuning_history")
    return "tuning_history.png"


def _importances(study: Any) -> dict[str, float]:
    optuna = import_optuna()
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # Optuna's default
        return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}  # importances need at least two finished trials that differ


def _importance_bars(importances: dict[str, float], record: dict, out: Path) -> str:
    names = list(importances)[::-1]
    figure = Figure(figsize=(7, 0.5 * len(names) + 1.5))
    axes = figure.add_subplot()
    axes.barh(names, [importances[n] for n in names], color="tab:blue")
    axes.set_xlabel(f"importance for {record['metric']} (PED-ANOVA, shares summing to 1)")
    axes.set_title("Parameter importances")
    figure.tight_layout()
    save(figure, out, "tuning_importance")
    return "tuning_importance.png"
