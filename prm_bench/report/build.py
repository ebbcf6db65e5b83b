"""Build a report from a finished run: one function per section of its README.md."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prm_bench.atomic import write_text_atomic
from prm_bench.config import ExperimentConfig, Plan
from prm_bench.geometry.maps import resize_maps
from prm_bench.instances.methods import METHODS
from prm_bench.metrics.instance import voc_pr_curve
from prm_bench.orchestrate.rundir import plan_from_manifest, store_of
from prm_bench.report import figures
from prm_bench.report.claims import claims_method, measure_claims
from prm_bench.report.gap import gap_section
from prm_bench.report.header import (
    command_line,
    computed_time,
    environment_line,
    leak_line,
    leaking_cells,
    missing_cells,
    on_paper_data,
    stage_time,
)
from prm_bench.report.markdown import setting_lines, shown_path
from prm_bench.report.tables import ReportTable, build_tables, to_latex, to_markdown
from prm_bench.report.tuning import has_tuning, tuning_section
from prm_bench.stages.evaluate import STATISTICS_FILE, read_statistics
from prm_bench.stages.infer import read_image
from prm_bench.stages.retrieve import read_results
from prm_bench.stages.splits import ground_truth, open_split
from prm_bench.stages.store import Store


@dataclass
class _Run:
    """What every section reads: the run's results, plan, manifest and store."""

    run_dir: Path
    out: Path
    results: pd.DataFrame
    plan: Plan
    manifest: dict
    configs: dict[int, ExperimentConfig]
    store: Store
    tables: list[ReportTable]

    @property
    def figures(self) -> Path:
        return self.out / "figures"


def build_report(
    run_dir: str | Path, out: str | Path | None = None, samples: int = 3, resamples: int = 1000
) -> Path:
    """Compile the tables, claims and figures of a finished run into `out`
    (default: `<run_dir>/report`); claims get bootstrap CIs from `resamples` draws."""
    run = _open(Path(run_dir), Path(out) if out else Path(run_dir) / "report")
    (run.out / "tables").mkdir(parents=True, exist_ok=True)
    lines = [
        *_header(run),
        *_tables(run),
        *_every_metric(run),
        *_claims(run, resamples),
        *gap_section(
            run.plan, _statistics_reader(run.store, _keys(run)), run.out, resamples, run.store
        ),
        *_training(run),
        *_precision_recall(run),
        *_qualitative_section(run, samples),
        *_tuning(run, resamples),
    ]
    write_text_atomic(run.out / "README.md", "\n".join(lines))
    return run.out


def _open(run_dir: Path, out: Path) -> _Run:
    results_file = run_dir / "results.csv"
    if not results_file.is_file() or not (run_dir / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{run_dir} has no results.csv/manifest.json: run `prm-bench run` first"
        )
    results = pd.read_csv(results_file) if results_file.stat().st_size > 1 else pd.DataFrame()
    if results.empty:
        raise FileNotFoundError(
            f"{run_dir} has no finished cell yet: finish `prm-bench run` (see prm-bench status)"
        )
    plan = plan_from_manifest(run_dir)
    return _Run(
        run_dir,
        out,
        results,
        plan,
        json.loads((run_dir / "manifest.json").read_text()),
        {cell.index: cell.config for cell in plan.cells},
        store_of(run_dir),
        build_tables(
            results,
            {cell.index: set(cell.axes) for cell in plan.cells},
            on_paper_data(plan.cells[0].config),
        ),
    )


def _header(run: _Run) -> list[str]:
    manifest, first = run.manifest, run.plan.cells[0].config
    device = manifest.get("device_used") or manifest.get("device")
    wall = manifest.get("wall_seconds")
    return [
        f"# Report: {run.plan.name}",
        "",
        *setting_lines(run.plan.source),
        f"- Source config: `{shown_path(manifest.get('source'))}`; git commit "
        f"`{manifest.get('git_commit')}`; device {device} ({manifest.get('threads', '?')} "
        f"threads); torch {manifest['versions']['torch']}.",
        f"- Dataset: {first.data.name}, trained on `{first.data.train_split}`, evaluated on "
        f"`{first.data.eval_split}`; backbones: "
        f"{_describe({c.backbone.name for c in run.configs.values()})}; seeds: "
        f"{_describe({c.train.seed for c in run.configs.values()})}.",
        environment_line(run.plan, run.store),
        *command_line(manifest),
        f"- Stage wall time of the last `prm-bench run` on this store: {stage_time(manifest)}"
        + (f"; whole run {wall / 60:.1f} min" if wall is not None else "")
        + f". {computed_time(run.plan, run.store)}",
        "- Values in %, mean +- std over seeds where a table has more than one; "
        + (
            "`paper` is the published number (PASCAL VOC 2012 val) and `diff` this run minus "
            "the paper."
            if on_paper_data(first)
            else f"`VOC ref.` is the paper's number on PASCAL VOC 2012 val, a reference on "
            f"another dataset than this run's ({first.data.name}): no difference is taken, "
            "and none reads as a reproduction."
        ),
        *missing_cells(manifest),
        *leak_line(run.configs),
        "",
    ]


def _tables(run: _Run) -> list[str]:
    first = run.plan.cells[0].config
    split = f"{first.data.name} ({first.data.eval_split})"
    lines = []
    for table in run.tables:
        cells = [c for members in table.cells.values() for c in members]
        backbones = _describe({run.configs[c].backbone.name for c in cells})
        write_text_atomic(
            run.out / "tables" / f"{table.spec.key}.csv", table.frame.to_csv(index=False)
        )
        write_text_atomic(
            run.out / "tables" / f"{table.spec.key}.tex", to_latex(table.frame, table.spec.title)
        )
        figures.save(figures.bar_chart(table), run.figures, table.spec.key)
        leaks = sorted(set(cells) & set(leaking_cells(run.configs)))
        note = (
            f"**Leak:** cells {_describe(set(leaks))} of this table train on the evaluation images."
        )
        lines += [
            f"## {table.spec.title}",
            "",
            f"Protocol: {table.spec.protocol}. Dataset {split}; backbone {backbones}; "
            f"seeds per row: {table.seeds}.",
            "",
            to_markdown(table.frame),
            "",
            *([note, ""] if leaks else []),
            f"![{table.spec.key}](figures/{table.spec.key}.png)",
            "",
        ]
        if table.axes == ["backbone.name"]:
            figures.save(figures.backbone_comparison(table), run.figures, "backbone_comparison")
            lines += ["![backbones](figures/backbone_comparison.png)", ""]
    return lines


def _every_metric(run: _Run) -> list[str]:
    """Every metric the run computed, per cell: the paper's tables show a few of them, and
    a metric asked for must appear somewhere (pointing, PRM quality, per-class values)."""
    results = run.results
    if results.empty:
        return []
    shown = results[~results["metric"].str.contains("/")]  # per-class values: in the csv
    frame = shown.pivot_table(index="cell", columns="metric", values="value", aggfunc="first")
    frame = frame.round(4)
    axes = {c.index: ", ".join(f"{k}={v}" for k, v in c.axes.items()) for c in run.plan.cells}
    axes |= {
        i: f"{axes.get(i, '')} (LEAK: trained on the evaluation images)"
        for i in leaking_cells(run.configs)
    }
    frame.insert(0, "axes", [axes.get(i, "") for i in frame.index])
    write_text_atomic(run.out / "tables" / "every_metric.csv", frame.to_csv())
    return [
        "## Every metric, per cell",
        "",
        "Values as stored: shares in [0, 1] (the tables above show them in %), counts, and "
        "`_px` in pixels; the per-class values are in the run's `results.csv`.",
        "",
        to_markdown(frame.reset_index()),
        "",
    ]


def _claims(run: _Run, resamples: int) -> list[str]:
    claims, intervals = measure_claims(
        run.tables,
        _statistics_reader(run.store, _keys(run)),
        lambda c: run.configs[c].train.seed,
        resamples,
    )
    write_text_atomic(run.out / "tables" / "claims.csv", claims.to_csv(index=False))
    lines = ["## The paper's claims, measured here", "", *claims_method(intervals), ""]
    if not on_paper_data(run.plan.cells[0].config) and len(claims):
        lines += [
            "This run is not on the paper's data: `paper effect` and `magnitude vs paper` "
            "are a reference from PASCAL VOC 2012, not a test of a reproduction.",
            "",
        ]
    optional = ("magnitude vs paper", "seed sd", "image-only 95% CI")
    empty = [c for c in optional if c in claims.columns and not claims[c].astype(bool).any()]
    lines += [to_markdown(claims.drop(columns=empty)), ""]
    if any(i is not None for i in intervals):
        figures.save(figures.claims_forest(claims, intervals), run.figures, "claims")
        lines += ["![claims](figures/claims.png)", ""]
    return lines


def _training(run: _Run) -> list[str]:
    labels: dict[str, str] = {}
    for cell in run.plan.cells:
        config = cell.config
        labels.setdefault(
            cell.keys["train"],
            f"{config.backbone.name} / {config.stimulation.name} / seed {config.train.seed}",
        )
    logs = figures.read_training_logs(run.store.root, labels)
    if not logs:
        return []
    figures.save(figures.training_curves(logs), run.figures, "training_curves")
    return ["## Training curves", "", "![training](figures/training_curves.png)", ""]


def _precision_recall(run: _Run) -> list[str]:
    curves = _pr_curves(run.plan, run.store, run.tables)
    if not curves:
        return []
    figures.save(figures.pr_curves(curves), run.figures, "pr_curves")
    return ["## Precision-recall at IoU 0.5", "", "![pr](figures/pr_curves.png)", ""]


def _qualitative_section(run: _Run, samples: int) -> list[str]:
    panel = _qualitative(run.plan, run.store, samples)
    if not panel:
        return []
    figures.save(figures.qualitative_panel(panel), run.figures, "qualitative")
    return [
        "## Qualitative results (first PRM cell)",
        "",
        "![qualitative](figures/qualitative.png)",
        "",
    ]


def _tuning(run: _Run, resamples: int) -> list[str]:
    return tuning_section(run.run_dir, run.out, resamples) if has_tuning(run.run_dir) else []


def _describe(values: set) -> str:
    return ", ".join(sorted(str(v) for v in values))


def _keys(run: _Run) -> dict[int, dict]:
    return {c.index: c.keys for c in run.plan.cells}


def _statistics_reader(store: Store, keys: dict[int, dict]) -> Callable[[int], dict | None]:
    """A cell's per-image statistics (None for a store written before they existed)."""

    @functools.cache
    def read(cell: int) -> dict | None:
        key = keys[cell]["evaluate"]
        path = store.path("evaluate", key) / STATISTICS_FILE
        return read_statistics(store, key) if path.is_file() else None

    return read


def _pr_curves(plan, store: Store, tables) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Curves for the rows of the method table, else the retrieval-term table."""
    wanted = next((t for t in tables if t.axes == ["method.name"]), None) or next(
        (t for t in tables if t.axes == ["retrieval.terms"]), None
    )
    if wanted is None:
        return {}
    axis = wanted.axes[0]
    curves = {}
    for cell in plan.cells:
        value = cell.axes.get(axis)
        keys = cell.keys
        if value is None or str(value) in curves or not store.is_done("retrieve", keys["retrieve"]):
            continue
        dataset = open_split(cell.config.data, "evaluated", segmentation=True)
        truth = ground_truth(dataset)
        predictions = read_results(store.path("retrieve", keys["retrieve"]), dataset.ids)
        curves[str(value)] = voc_pr_curve(predictions, truth, 0.5, len(dataset.class_names))
    return curves


def _qualitative(plan, store: Store, count: int) -> list[dict]:
    cell = next((c for c in plan.cells if METHODS.get(c.config.method.name).uses_retrieval), None)
    if cell is None:
        return []
    keys = cell.keys
    if not store.is_done("retrieve", keys["retrieve"]):
        return []
    dataset = open_split(cell.config.data, "evaluated", segmentation=True)
    ids = dataset.ids[:count]
    predictions = read_results(store.path("retrieve", keys["retrieve"]), ids)
    samples = []
    for image_id, predicted in zip(ids, predictions, strict=True):
        image = dataset.image(image_id)
        stored = read_image(store.path("infer", keys["infer"]), image_id, at_image_size=True)
        crm = resize_maps(stored["crm"], image.shape[:2])[0].max(axis=0)
        samples.append(
            {
                "id": image_id,
                "image": image,
                "crm": crm,
                "prms": stored["prms"],
                "predicted": [p["mask"] for p in predicted if p["score"] > -np.inf][:8],
                "truth": [i.mask for i in dataset.instances(image_id)],
            }
        )
    return samples
