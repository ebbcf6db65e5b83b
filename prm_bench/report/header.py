"""The lines of a report's header that describe the run: where its numbers come from,
what it took, which cells are missing, and whether the paper's numbers are comparable."""

from __future__ import annotations

from pathlib import Path

from prm_bench.config import STAGES, ExperimentConfig, Plan
from prm_bench.orchestrate.rundir import environments
from prm_bench.stages.store import Store


def on_paper_data(config: ExperimentConfig) -> bool:
    """Whether a run is on the paper's benchmark (PASCAL VOC 2012, evaluated on val)."""
    return config.data.name == "voc" and Path(str(config.data.eval_split)).stem == "val"


def missing_cells(manifest: dict) -> list[str]:
    """A warning naming the cells without results, and why (a partly failed run must
    not look complete)."""
    cells = manifest.get("cells") or []
    missing = [c for c in cells if c.get("status") != "done"]
    if not missing:
        return []
    lines = [f"- **{len(missing)} of {len(cells)} cells have no results**; the tables lack "
             "their rows:"]  # fmt: skip
    for cell in missing:
        axes = ", ".join(f"{k}={v}" for k, v in (cell.get("axes") or {}).items()) or "-"
        why = cell.get("error") or cell.get("status", "pending")
        lines.append(f"  - cell {cell.get('index')} ({axes}): {why}")
    return lines


def command_line(manifest: dict) -> list[str]:
    """The command behind the numbers (with its --set overrides), where recorded."""
    argv = manifest.get("command")
    if not argv:
        return []
    program = Path(argv[0]).name
    program = "prm-bench" if program in ("__main__.py", "prm_bench") else program  # python -m
    shown = " ".join([program, *argv[1:]])
    return [f"- Command: `{shown}`."]


def stage_time(manifest: dict) -> str:
    """The stage wall time of the last run on the store, per stage."""
    totals: dict[str, float] = {}
    for name, seconds in manifest.get("stage_seconds", {}).items():
        stage = name.split("/")[0]
        totals[stage] = totals.get(stage, 0.0) + seconds
    if not totals:
        return "nothing ran (every stage was reused)"
    parts = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in totals.items())
    return f"{sum(totals.values()):.0f} s ({parts})"


def computed_time(plan: Plan, store: Store) -> str:
    """What computing every stage of the plan took, from the stage records (a fully
    cached rerun took no time, but its numbers did)."""
    stages = {(s, c.keys[s]) for c in plan.cells for s in STAGES}
    seconds = 0.0
    for stage, key in stages:
        try:
            seconds += float(store.record(stage, key).get("seconds", 0.0))
        except (OSError, ValueError, TypeError):
            continue
    return f"Computing its stages took {seconds / 60:.1f} min in all (as recorded with them)."


def environment_line(plan: Plan, store: Store) -> str:
    """What the stages were computed with, or a warning when a resume mixed them."""
    groups = environments(plan, store)
    if len(groups) <= 1:
        return f"- Every stage was computed with: {next(iter(groups), 'unknown')}."
    parts = "; ".join(f"{d} ({len(s)} stages)" for d, s in groups.items())
    return f"- **Mixed environments** (a resume changed threads, versions or device): {parts}."


def leaking_cells(configs: dict[int, ExperimentConfig]) -> list[int]:
    """The cells that train on the evaluation images (`data.leak`)."""
    return sorted(i for i, c in configs.items() if c.data.leaks)


def leak_line(configs: dict[int, ExperimentConfig]) -> list[str]:
    """The header's warning about leaking cells (none without them)."""
    cells = leaking_cells(configs)
    if not cells:
        return []
    return [f"- **Leak:** cells {', '.join(map(str, cells))} train on the evaluation images "
            "(`data.leak: train-on-eval`); they measure that leak, not the method, and every "
            "table that holds one says so."]  # fmt: skip
