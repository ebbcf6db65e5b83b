"""The `prm-bench` command line. Library modules print nothing; this module owns output."""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import typer
from rich.console import Console
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

from prm_bench import __version__
from prm_bench.backbones import BACKBONES
from prm_bench.baselines import BASELINES
from prm_bench.config import ConfigError, load_plan
from prm_bench.data import DATASETS, generator_of, open_dataset
from prm_bench.data.base import DataError, Dataset
from prm_bench.data.shapes import CLASS_SHAPES, ShapesSpec, generate_shapes
from prm_bench.executors import make_executor
from prm_bench.methods import METHODS
from prm_bench.metrics import METRICS
from prm_bench.peaks import STIMULATIONS
from prm_bench.proposals import GALLERIES, open_gallery
from prm_bench.proposals.quality import gallery_quality
from prm_bench.registry import Registry
from prm_bench.retrieval import TERMS
from prm_bench.runner import (
    RunInterrupted,
    RunLockedError,
    RunOutputError,
    environments,
    plan_from_manifest,
    plan_tasks,
    preflight,
    run_plan,
    stage_status,
)
from prm_bench.stages.common import STAGES
from prm_bench.stages.store import Store

app = typer.Typer(
    name="prm-bench",
    help="Benchmark and ablation harness for Peak Response Maps (PRM, CVPR 2018).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()

FAMILIES: dict[str, Registry] = {
    "backbones": BACKBONES,
    "stimulations": STIMULATIONS,
    "terms": TERMS,
    "galleries": GALLERIES,
    "baselines": BASELINES,
    "methods": METHODS,
    "metrics": METRICS,
    "datasets": DATASETS,
}


def _describe(family: str, name: str) -> tuple[str, str]:
    entry = FAMILIES[family].get(name)
    if family == "backbones":
        return f"{entry.channels} ch, stride {entry.stride}", entry.description
    if family == "methods":
        needs = ["proposals"] if entry.needs_proposals else []
        configured = "retrieval" if entry.uses_retrieval else "method.baseline"
        return ", ".join([*needs, f"configured by {configured}"]), entry.description
    if family == "galleries":
        traits = entry.traits
        needs = [n for n, on in (("root", traits.needs_root), ("ground truth",
                 traits.needs_truth), ("store cache", traits.store_cache)) if on]  # fmt: skip
        return ", ".join(needs) or "-", (entry.__doc__ or "").strip().splitlines()[0]
    if family == "datasets":
        made = "generated on first use (data.generate)" if generator_of(name) else "read"
        return made, (entry.__doc__ or "").strip().splitlines()[0]
    if family == "metrics":
        needs = ", ".join(sorted(entry.needs)) or "instances"
        return f"protocol {entry.protocol}; needs {needs}", entry.description
    if family == "terms":
        on = [n for n, flag in (("instance", entry.instance), ("boundary", entry.boundary),
                                ("class", entry.klass)) if flag]  # fmt: skip
        return " + ".join(on), "retrieval score terms switched on"
    options = [
        f"{p.name}={p.default!r}"
        for p in inspect.signature(entry).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    doc = (entry.__doc__ or "").strip().splitlines()[0]
    return ", ".join(options) or "-", doc


@app.command("list")
def list_entries(
    family: str = typer.Argument(None, help=f"One of: {', '.join(FAMILIES)} (default: all)."),
    pattern: str = typer.Argument("*", help="fnmatch pattern over the names, e.g. 'resnet*'."),
) -> None:
    """List the entries of the registries (backbones, stimulations, terms, galleries,
    baselines, methods, metrics, datasets)."""
    if family is not None and family not in FAMILIES:
        console.print(
            f"[red]error:[/] unknown family {family!r} (choose from {', '.join(FAMILIES)})"
        )
        raise typer.Exit(2)
    for name in [family] if family else list(FAMILIES):
        table = Table(title=name, title_justify="left")
        for column in ("name", "properties", "description"):
            table.add_column(column)
        for entry in FAMILIES[name].names(pattern):
            table.add_row(entry, *_describe(name, entry))
        console.print(table)
    if family in (None, "backbones"):
        console.print("Any timm CNN is also available as [bold]timm:<name>[/].")
    if family in (None, "galleries"):
        console.print("Any gallery X is also available as [bold]gt+X[/] (ground truth first).")


data_app = typer.Typer(help="Generate and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("shapes")
def data_shapes(
    out_dir: Path = typer.Argument(..., help="Dataset root to create (VOC 2012 layout)."),
    seed: int = typer.Option(0, help="Base seed; the same arguments give identical files."),
    n_train: int = typer.Option(2000, help="Training images."),
    n_val: int = typer.Option(400, help="Validation images."),
    n_tune: int = typer.Option(200, help="Images of the held-out tuning split (0: none)."),
    size: int = typer.Option(128, help="Image side in pixels."),
    classes: int = typer.Option(5, help=f"Number of classes (1-{len(CLASS_SHAPES)})."),
    jobs: int = typer.Option(-1, help="Worker processes (-1: all cores)."),
) -> None:
    """Generate the embedded `shapes` dataset in the PASCAL VOC 2012 layout (+ COCO json)."""
    try:
        config = ShapesSpec(seed, n_train, n_val, size, classes, n_tune=n_tune)
        start = time.perf_counter()
        root = generate_shapes(out_dir, config, jobs=jobs)
    except (ValueError, FileExistsError) as err:
        _fail(err)
    console.print(
        f"shapes dataset in {root}: {n_train} train + {n_val} val + {n_tune} tune images "
        f"of {size} px, "
        f"classes {', '.join(config.class_names)} ({time.perf_counter() - start:.1f} s)"
    )


DATASET_OPTION = typer.Option("voc", "--dataset", help="Dataset kind: voc, coco or shapes.")


@data_app.command("tune-split")
def data_tune_split(
    root: Path = typer.Argument(..., help="Dataset root."),
    source: str = typer.Option(
        "train", "--from", help="Split with instance masks the tuning images are drawn from."
    ),
    train: str = typer.Option(
        ..., help="The training split (name or list file) to remove the tuning images from."
    ),
    count: int = typer.Option(300, min=1, help="Tuning images."),
    seed: int = typer.Option(0, help="Seed of the draw."),
    out: Path = typer.Option(
        None, help="voc, shapes: folder for tune.txt and train-minus-tune.txt."
    ),
    kind: str = DATASET_OPTION,
) -> None:
    """Hold out a seeded subset of a split with masks as the tuning split (data.tune_split)
    and write the training split without it (data.train_split), so the classifier never
    sees a tuning image. VOC layouts get two list files in OUT; COCO gets
    annotations/instances_<train>@rest.json and instances_<from>@tune.json."""
    try:
        if kind in ("voc", "shapes") and out is None:
            raise DataError(f"--dataset {kind} writes list files: give --out FOLDER")
        pool = _open(kind, root, source, True).ids
        if count >= len(pool):
            raise DataError(f"--count {count}: the {source} split has only {len(pool)} images")
        training = _open(kind, root, train, False)
    except DataError as err:
        _fail(err)
    order = np.random.default_rng(seed).permutation(len(pool))
    held = sorted(pool[i] for i in order[:count])
    rest = [i for i in training.ids if i not in set(held)]
    if kind == "coco":
        source_set = _open(kind, root, source, False)
        written = [
            _coco_subset(source_set, held, root / "annotations" / f"instances_{source}@tune.json"),
            _coco_subset(training, rest, root / "annotations" / f"instances_{train}@rest.json"),
        ]
        splits = f"data.tune_split={source}@tune data.train_split={train}@rest"
    else:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "tune.txt", out / "train-minus-tune.txt"]
        written[0].write_text("".join(f"{i}\n" for i in held))
        written[1].write_text("".join(f"{i}\n" for i in rest))
        splits = f"data.tune_split={written[0]} data.train_split={written[1]}"
    console.print(
        f"{written[0]}: {len(held)} images of {source} (seed {seed}); {written[1]}: "
        f"{len(rest)} of {len(training.ids)} training images. Use --set {splits}"
    )


def _coco_subset(dataset: Dataset, ids: list[str], path: Path) -> Path:
    path.write_text(json.dumps(dataset.subset(ids)))
    return path


def _open(kind: str, root: Path, split: str, segmentation: bool) -> Dataset:
    if kind not in DATASETS:
        raise DataError(DATASETS.unknown_message(kind))
    return open_dataset(kind, root, split, segmentation=segmentation)


@data_app.command("info")
def data_info(
    root: Path = typer.Argument(..., help="Dataset root."),
    kind: str = DATASET_OPTION,
    split: str = typer.Option("val", help="Split name (VOC: or a split list file)."),
    segmentation: bool = typer.Option(True, help="Read the instance masks of the split."),
) -> None:
    """Check a dataset's layout and print its size, labels and instances per class."""
    try:
        dataset = _open(kind, root, split, segmentation)
        labels = np.zeros(len(dataset.class_names))
        counts = np.zeros(len(dataset.class_names), dtype=int)
        for image_id in dataset.ids:
            labels += dataset.labels(image_id)
            if segmentation:
                for instance in dataset.instances(image_id):
                    counts[instance.label] += 1
    except DataError as err:
        _fail(err)
    table = Table(title=f"{root} {split} ({len(dataset.ids)} images)", title_justify="left")
    for column in ("class", "images", "instances"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, n_images, n_instances in zip(dataset.class_names, labels, counts, strict=True):
        table.add_row(name, str(int(n_images)), str(n_instances))
    console.print(table)


@data_app.command("proposals")
def data_proposals(
    root: Path = typer.Argument(..., help="Dataset root."),
    gallery: str = typer.Argument(..., help="Gallery name, e.g. embedded, mcg, gt, gt+mcg."),
    kind: str = DATASET_OPTION,
    split: str = typer.Option("val", help="Split with instance ground truth."),
    proposals: Path = typer.Option(
        None, help="Proposal folder (file galleries) or cache folder (embedded)."
    ),
    top_n: int = typer.Option(100, help="Proposals considered per image."),
    limit: int = typer.Option(None, help="Use only the first N images."),
    out: Path = typer.Option(None, help="JSON file for the figures (default: beside the data)."),
) -> None:
    """Recall at IoU 0.5 / 0.7 and ABO of a proposal gallery against the ground truth."""
    try:
        dataset = _open(kind, root, split, True)
        if gallery not in GALLERIES:
            raise DataError(GALLERIES.unknown_message(gallery))
        ids = dataset.ids[:limit] if limit else dataset.ids
        result = gallery_quality(dataset, open_gallery(gallery, proposals, dataset), ids, top_n)
    except DataError as err:
        _fail(err)
    out = out or root / "proposal_quality" / f"{gallery}_{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"dataset": str(root), "split": split, "gallery": gallery, "top_n": top_n, **result}
    out.write_text(json.dumps(record, indent=2) + "\n")
    table = Table(title=f"gallery {gallery} on {root} {split}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.3f}" if value % 1 else f"{int(value)}")
    console.print(table)
    console.print(f"saved {out}")


def _check_writable(runs_dir: Path) -> None:
    """Refuse a --runs-dir that is a file or that cannot be written."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"--runs-dir {runs_dir} is a file, not a folder")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--runs-dir {runs_dir} cannot be created: {err.strerror}") from None
    if not os.access(runs_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"--runs-dir {runs_dir} is not writable")


def _read_manifest(run_dir: Path) -> dict:
    """A run directory's manifest, or a one-line error naming what is wrong."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no manifest.json: it is not a prm-bench run directory")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is damaged ({err}); rerun the config to rewrite it") from None


def _cells_not_in_plan(run_dir: Path, plan) -> int:
    """How many cells of the run directory's manifest the new plan leaves out."""
    try:
        cells = _read_manifest(run_dir)["cells"]
    except (ConfigError, KeyError, TypeError):
        return 0
    keys = {json.dumps(c.config.model_dump(mode="json"), sort_keys=True) for c in plan.cells}
    return sum(json.dumps(c.get("config"), sort_keys=True) not in keys for c in cells)


def _exit_interrupted() -> NoReturn:
    """Exit 130 now. Everything finished is on disk (atomic writes, manifest, log); a
    normal interpreter exit after a handled SIGINT sometimes ends in -2 instead (CPython
    re-raises an interrupt it saw at shutdown), which scripts would read as a crash."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _fail(err: Exception) -> NoReturn:
    console.print(f"[red]error:[/] {err}")
    raise typer.Exit(2)


# options shared by `run` and `tune`
OVERRIDES_OPTION = typer.Option([], "--set", help="Override a key: section.key=value.")
DEVICE_OPTION = typer.Option(None, help="auto, cpu or cuda (default: run.device).")
RUNS_DIR_OPTION = typer.Option(Path("runs"), help="Where run directories are made.")
EXECUTOR_OPTION = typer.Option("local", help="local (joblib processes), dask or slurm (submitit).")
SCHEDULER_OPTION = typer.Option(None, help="dask scheduler address, e.g. tcp://host:8786.")


PROGRESS_COLUMNS = (
    TextColumn("{task.description:<9}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("elapsed"),
    TimeElapsedColumn(),
    TextColumn("left"),
    TimeRemainingColumn(),
)


def _print_plan(plan, run_dir: Path) -> None:
    """The plan's stages to run and in store, and a note on cells it drops."""
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
    dropped = _cells_not_in_plan(run_dir, plan)
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
        else:
            task = info["task"]
            progress.advance(bars[task.stage])
            if not task.ok:
                progress.console.print(f"[red]{task.stage} {task.key} failed[/]: {task.error}")

    return report


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. ablations/quick.yaml."),
    overrides: list[str] = OVERRIDES_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    jobs: int = typer.Option(None, help="Parallel tasks per stage (default: run.jobs)."),
    device: str = DEVICE_OPTION,
    runs_dir: Path = RUNS_DIR_OPTION,
    executor: str = EXECUTOR_OPTION,
    scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Train, infer, retrieve and evaluate every cell of a grid, reusing finished stages."""
    try:
        plan = load_plan(config, overrides)
        preflight(plan)
    except (ConfigError, DataError) as err:
        _fail(err)
    if device not in (None, "auto", "cpu", "cuda"):
        _fail(ConfigError(f"--device must be auto, cpu or cuda, got {device!r}"))
    run_dir = runs_dir / plan.name
    try:
        _check_writable(runs_dir)
    except ConfigError as err:
        _fail(err)
    _print_plan(plan, run_dir)
    if dry_run:
        for cell in plan.cells:
            console.print(
                f"  cell {cell.index}: " + ", ".join(f"{k}={v}" for k, v in cell.axes.items())
            )
        return
    start = time.perf_counter()
    with Progress(*PROGRESS_COLUMNS, console=console) as progress:
        try:
            workers = make_executor(
                executor, jobs or plan.cells[0].config.run.jobs, scheduler, run_dir / "slurm"
            )
            summary = run_plan(
                plan, runs_dir, jobs=jobs, device=device, on_event=_progress_events(progress),
                executor=workers,
            )  # fmt: skip
        except (RunLockedError, RunOutputError, ValueError) as err:
            _fail(err)
        except RunInterrupted as err:
            progress.stop()  # restores the terminal (cursor) before the hard exit
            console.print(f"[yellow]{err}[/]")
            _exit_interrupted()
    console.print(
        f"{len(plan.cells) - len(summary.failed_cells)}/{len(plan.cells)} cells finished in "
        f"{time.perf_counter() - start:.1f} s; results in {run_dir / 'results.csv'}"
    )
    for cell, reason in sorted(summary.failed_cells.items()):
        console.print(f"[red]cell {cell} failed[/]: {reason}")
    if summary.failed_cells:
        raise typer.Exit(1)


@app.command()
def tune(
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
    jobs: int = typer.Option(1, help="Trials run together (one batch through the executor)."),
    seed: int = typer.Option(0, help="The sampler's base seed."),
    device: str = DEVICE_OPTION,
    runs_dir: Path = RUNS_DIR_OPTION,
    executor: str = EXECUTOR_OPTION,
    scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Tune the config's search: keys on data.tune_split with Optuna, then (--evaluate)
    test default and tuned once on the evaluation split. Stages are shared with `run`."""
    from prm_bench.tune import TuneFailed
    from prm_bench.tune import tune as run_tune

    try:
        plan = load_plan(config, overrides, use_grid=False)
        if device not in (None, "auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
        _check_writable(runs_dir)
        preflight(plan)
    except (ConfigError, DataError) as err:
        _fail(err)
    start = time.perf_counter()

    def report(number: int, values: dict, score: float | None) -> None:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())  # fmt: skip
        outcome = f"{metric} {score:.4f}" if score is not None else "[red]failed[/]"
        console.print(f"trial {number}: {shown} -> {outcome}")

    try:
        workers = make_executor(executor, jobs, scheduler, runs_dir / plan.name / "slurm")
        summary = run_tune(
            plan, trials, metric, runs_dir, storage, jobs, device, workers, seed, direction,
            evaluate, report,
        )  # fmt: skip
    except (ConfigError, DataError, RunLockedError, RunOutputError, ValueError) as err:
        _fail(err)
    except RunInterrupted as err:
        console.print(f"[yellow]{err}[/] (finished trials are kept in the study)")
        _exit_interrupted()
    except TuneFailed as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None
    runs = ", ".join(f"{stage} {count}" for stage, count in summary.executed.items())
    console.print(
        f"best of {summary.trials} trials ({summary.failed} failed): {metric} "
        f"{summary.best_value:.4f} with {summary.best_params} (trial {summary.best_trial}); "
        f"{time.perf_counter() - start:.1f} s; stage runs: {runs}"
    )
    console.print(f"best config: {summary.best_config}")
    if summary.test_dir is not None:
        console.print(
            f"tested once on the evaluation split: {summary.test_dir / 'results.csv'} "
            f"(prm-bench report {summary.run_dir})"
        )


@app.command()
def status(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/quick.")) -> None:
    """Show which stages of each cell of a run are done, failed or pending."""
    try:
        manifest = _read_manifest(run_dir)
        plan = plan_from_manifest(run_dir)
    except (ConfigError, KeyError, TypeError, ValueError) as err:
        _fail(ConfigError(f"{run_dir / 'manifest.json'}: {err}"))
    manifest_status = {c["index"]: c["status"] for c in manifest["cells"]}
    table = Table(title=f"{run_dir}: {len(plan.cells)} cells", title_justify="left")
    for column in ("cell", "axes", *STAGES, "status"):
        table.add_column(column)
    for row in stage_status(plan, run_dir):
        marks = ["done" if row[s] else "-" for s in STAGES]
        recorded = manifest_status.get(row["cell"], "pending")
        if all(row[s] for s in STAGES):
            state = "done"
        else:
            state = "failed" if recorded == "failed" else "pending"
        axes = ", ".join(f"{k}={v}" for k, v in row["axes"].items())
        table.add_row(str(row["cell"]), axes, *marks, state)
    console.print(table)
    groups = environments(plan, run_dir)
    if len(groups) > 1:
        console.print(f"[yellow]stages were computed in {len(groups)} environments:[/]")
        for described, stages in groups.items():
            console.print(f"  {described}: {len(stages)} stages (e.g. {stages[0]})")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A finished run directory, e.g. runs/quick."),
    out: Path = typer.Option(None, help="Output folder (default: RUN_DIR/report)."),
    resamples: int = typer.Option(
        1000, min=100, help="Bootstrap resamples behind each claim's 95% CI."
    ),
    tuning: bool = typer.Option(
        False, "--tuning", help="Only the `prm-bench tune` study (tuned vs default)."
    ),
) -> None:
    """Paper-style tables (Markdown, LaTeX, CSV) and figures of a run, paper numbers alongside."""
    from prm_bench.report import build_report
    from prm_bench.report.tuning import build_tuning_report, has_tuning

    try:
        if tuning and not has_tuning(run_dir):
            raise ConfigError(f"{run_dir} holds no tuning study: run `prm-bench tune` first")
        if tuning or (has_tuning(run_dir) and not (run_dir / "manifest.json").exists()):
            folder = build_tuning_report(run_dir, out, resamples=resamples)
        else:
            _read_manifest(run_dir)
            folder = build_report(run_dir, out, resamples=resamples)
    except (ConfigError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"report written to {folder} (README.md, tables/, figures/)")


@app.command()
def version() -> None:
    """Print the prm-bench version."""
    console.print(__version__)


def main() -> None:
    """Entry point for `python -m prm_bench`."""
    app()
