"""`prm-bench status` and `prm-bench report`: read a run directory back."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from prm_bench.cli.app import app, console, exit_interrupted, fail, plain
from prm_bench.errors import ConfigError

STAGES = ("train", "infer", "retrieve", "evaluate")  # config.STAGES, without importing torch


@app.command()
def status(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/quick.")) -> None:
    """Show which stages of each cell of a run are done, failed or pending."""
    from prm_bench.orchestrate.rundir import (
        environments,
        is_running,
        plan_from_manifest,
        read_manifest,
        stage_status,
        store_of,
        training_epoch,
    )

    try:
        manifest = read_manifest(run_dir)
        plan = plan_from_manifest(run_dir)
    except ConfigError as err:
        fail(err)
    except (KeyError, TypeError, ValueError) as err:
        fail(ConfigError(f"{run_dir / 'manifest.json'}: {err}"))
    store = store_of(run_dir)
    manifest_status = {c["index"]: c["status"] for c in manifest["cells"]}
    table = Table(title=f"{run_dir}: {len(plan.cells)} cells", title_justify="left")
    for column in ("cell", "axes", *STAGES, "status"):
        table.add_column(column)
    running = is_running(run_dir)
    errors = {c["index"]: c.get("error") for c in manifest["cells"]}
    cells = {c.index: c for c in plan.cells}
    for row in stage_status(plan, store):
        marks = ["done" if row[s] else "-" for s in STAGES]
        state = _state(row, manifest_status.get(row["cell"], "pending"), running,
                       errors.get(row["cell"]))  # fmt: skip
        epoch = training_epoch(store, cells[row["cell"]]) if state.startswith("running") else None
        if epoch is not None:
            state += f" (train epoch {epoch}/{cells[row['cell']].config.train.epochs})"
        axes = ", ".join(f"{k}={v}" for k, v in row["axes"].items())
        table.add_row(str(row["cell"]), plain(axes), *marks, plain(state))
    console.print(table)
    groups = environments(plan, store)
    if len(groups) > 1:
        console.print(f"[yellow]stages were computed in {len(groups)} environments:[/]")
        for described, stages in groups.items():
            console.print(f"  {plain(described)}: {len(stages)} stages (e.g. {stages[0]})")


def _state(row: dict, recorded: str, running: bool, error: str | None) -> str:
    """A cell's state: done, failed (with why), running, stopped (its run was killed or
    interrupted: the same command resumes it) or pending."""
    if all(row[s] for s in STAGES):
        return "done"
    if recorded == "failed":
        return f"failed: {error}" if error else "failed"
    if recorded == "running":
        return "running" if running else "stopped (run the same command to resume)"
    return "pending"


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
    from prm_bench.orchestrate.rundir import read_manifest
    from prm_bench.report import build_report
    from prm_bench.report.tuning import build_tuning_report, has_tuning

    try:
        if tuning and not has_tuning(run_dir):
            raise ConfigError(f"{run_dir} holds no tuning study: run `prm-bench tune` first")
        if tuning or (has_tuning(run_dir) and not (run_dir / "manifest.json").exists()):
            folder = build_tuning_report(run_dir, out, resamples=resamples)
        else:
            read_manifest(run_dir)
            folder = build_report(run_dir, out, resamples=resamples)
    except (ConfigError, FileNotFoundError) as err:
        fail(err)
    except OSError as err:  # --out under a file, a full disk, no permission
        fail(ConfigError(f"cannot write the report in {out or run_dir / 'report'}: {err}"))
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted:[/] the report in {out or run_dir / 'report'} is incomplete "
            "(every file in it is whole); run the same command again"
        )
        exit_interrupted()
    console.print(f"report written to {folder} (README.md, tables/, figures/)")
