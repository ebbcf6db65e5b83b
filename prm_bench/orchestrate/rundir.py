"""A run directory, `runs/<name>/`: its lock, log, manifest and results, and reading a
finished or running one back (docs/design.md, section 5).

Everything that reads a run directory (`status`, the report, `tune`) goes through here,
never through the runner.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prm_bench import __version__
from prm_bench.atomic import atomic_path
from prm_bench.config import STAGES, Cell, ConfigError, ExperimentConfig, Plan, RunSettings
from prm_bench.metrics import protocol_of
from prm_bench.stages.errors import StageError, resolve_device
from prm_bench.stages.store import Store, write_atomic, write_json

if TYPE_CHECKING:  # pandas loads with the results: planning and `status` do without
    import pandas as pd

MANIFEST = "manifest.json"
TUNING = "tuning"  # `prm-bench tune`'s folder inside the run directory


class RunLockedError(RuntimeError):
    """Another run is using the run directory."""


class RunOutputError(OSError):
    """A run's output file could not be written (disk full, permissions); names the file."""


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


class RunLog:
    """Appends timestamped lines to `<run dir>/run.log`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, line: str) -> None:
        with open(self.path, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


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
    import pandas as pd
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
    import pandas as pd

    from prm_bench.stages.evaluate import METRICS_FILE

    rows = []
    for cell in plan.cells:
        key = cell.keys["evaluate"]
        if not store.is_done("evaluate", key):
            continue
        values = json.loads((store.path("evaluate", key) / METRICS_FILE).read_text())
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


def write_outputs(plan: Plan, store: Store, run_dir: Path, progress: dict) -> pd.DataFrame:
    """Write `results.csv`, `results.parquet` and `manifest.json` for the plan as it
    stands; `progress` holds `statuses` (per cell), `seconds` (per stage task) and
    `wall_seconds`.

    Raises:
        RunOutputError: naming the file that could not be written.
    """
    results = collect_results(plan, store)
    try:
        write_atomic(run_dir / "results.csv", results.to_csv(index=False).encode())
        with atomic_path(run_dir / "results.parquet") as tmp:
            results.to_parquet(tmp, index=False)
    except OSError as err:
        raise RunOutputError(
            f"cannot write the results in {run_dir}: {err.strerror or err}"
        ) from err
    try:
        write_json(run_dir / MANIFEST, _manifest(plan, store, run_dir, progress))
    except OSError as err:
        raise RunOutputError(f"cannot write {run_dir / MANIFEST}: {err.strerror or err}") from err
    return results


def _manifest(plan: Plan, store: Store, run_dir: Path, progress: dict) -> dict[str, Any]:
    statuses = progress.get("statuses", {})
    return {
        "name": plan.name,
        "source": str(plan.source) if plan.source else None,
        "source_path": str(Path(plan.source).resolve()) if plan.source else None,
        "command": sys.argv,  # the command line, --set overrides included
        "store": os.path.relpath(store.root, run_dir),
        "axes": plan.axes,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "run": plan.run.model_dump(mode="json"),
        "device": plan.run.device,
        "device_used": _device_used(plan.run.device),
        "threads": plan.run.threads,
        "wall_seconds": progress.get("wall_seconds", 0.0),
        "cells": [
            {
                "index": cell.index,
                "axes": cell.axes,
                "keys": cell.keys,
                "status": statuses.get(cell.index, "pending"),
                "error": progress.get("errors", {}).get(cell.index),
                "config": cell.config.model_dump(mode="json"),
            }
            for cell in plan.cells
        ],
        "stage_seconds": progress.get("seconds", {}),
        "gap": plan.gap.model_dump(mode="json") if plan.gap else None,
    }


def _device_used(device: str) -> str:
    """What `auto` resolved to here (the device the stages of this process run on)."""
    try:
        return str(resolve_device(device))
    except StageError:
        return f"{device} (unavailable)"


def check_owner(run_dir: Path, plan: Plan) -> None:
    """Refuse to write a run directory that holds the run of another config file (the
    same file stem elsewhere): its results and manifest would be silently replaced.

    Raises:
        ConfigError: naming both files and how to keep them apart.
    """
    path = Path(run_dir) / MANIFEST
    if plan.source is None or not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text())
        recorded = manifest.get("source_path") or manifest.get("source")
    except (OSError, ValueError, AttributeError):
        return  # a damaged manifest is rewritten by the run
    if recorded and Path(recorded).resolve() != Path(plan.source).resolve():
        raise ConfigError(
            f"{run_dir} holds the run of {recorded}, not of {plan.source}: set run.name "
            "(--set run.name=NAME) or another --runs-dir to keep both"
        )


def read_manifest(run_dir: Path) -> dict:
    """A run directory's manifest.

    Raises:
        ConfigError: one line naming what is wrong (no manifest, or a damaged one).
    """
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no manifest.json: it is not a prm-bench run directory")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is damaged ({err}); rerun the config to rewrite it") from None


def store_of(run_dir: Path) -> Store:
    """The stage store a run directory's manifest names (`<run dir>/store` by default;
    a tuning run's trials use the store of the run they tune)."""
    try:
        relative = json.loads((run_dir / MANIFEST).read_text()).get("store", "store")
    except (OSError, ValueError):
        relative = "store"
    return Store((run_dir / relative).resolve() if relative != "store" else run_dir / "store")


def plan_from_manifest(run_dir: Path) -> Plan:
    """The plan a run directory was made from: its resolved cells with the stage keys the
    run used (a manifest written before cells carried keys gets them computed)."""
    manifest = read_manifest(run_dir)
    path = Path(run_dir) / MANIFEST
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("cells"), list)
        or not all(
            isinstance(c, dict) and isinstance(c.get("config"), dict) for c in manifest["cells"]
        )
    ):
        raise ConfigError(
            f"{path} is not a prm-bench manifest (expected an object whose cells each hold a "
            "config); rerun the config to rewrite it"
        )
    cells = []
    for cell in manifest["cells"]:
        config = dict(cell["config"])
        config.pop("run", None)  # manifests before run settings left the cells
        cells.append(
            Cell(
                index=cell["index"],
                axes=cell["axes"],
                config=_config_of(config, path),
                keys=cell.get("keys") or {},
            )
        )
    run = manifest.get("run") or {"device": manifest.get("device") or "auto"}
    return Plan(
        source=manifest["source"],
        name=manifest["name"],
        axes=manifest["axes"],
        cells=cells,
        run=RunSettings.model_validate(run),
        gap=manifest.get("gap"),
    )


def _config_of(config: dict, path: Path) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(config)
    except ValueError as err:
        first = str(err).splitlines()[:3]
        raise ConfigError(f"{path}: a cell's config does not load ({' '.join(first)})") from None


def stage_status(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Per cell, which of its stages are in the store."""
    return [
        {
            "cell": cell.index,
            "axes": cell.axes,
            **{s: store.is_done(s, cell.keys[s]) for s in STAGES},
        }
        for cell in plan.cells
    ]


def environments(plan: Plan, store: Store) -> dict[str, list[str]]:
    """The finished stages of a plan grouped by the environment they were computed in;
    more than one group means a resume mixed environments (threads, versions, device)."""
    stages = {(s, c.keys[s]) for c in plan.cells for s in STAGES}
    done = [(s, k) for s, k in sorted(stages) if (store.path(s, k) / "done.json").is_file()]
    return store.environments(done)


def is_running(run_dir: Path) -> bool:
    """Whether a prm-bench process holds the run directory's lock right now."""
    path = Path(run_dir) / ".lock"
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def training_epoch(store: Store, cell: Cell) -> int | None:
    """The last finished epoch of a cell's training that is not done yet (from its
    `events.jsonl`), or None."""
    if store.is_done("train", cell.keys["train"]):
        return None
    events = store.path("train", cell.keys["train"]) / "events.jsonl"
    try:
        return len(events.read_text().splitlines())
    except OSError:
        return None


def cells_not_in(run_dir: Path, plan: Plan) -> int:
    """How many cells of the run directory's manifest the new plan leaves out."""
    try:
        cells = read_manifest(run_dir)["cells"]
    except (ConfigError, KeyError, TypeError):
        return 0
    keys = {json.dumps(c.config.model_dump(mode="json"), sort_keys=True) for c in plan.cells}
    shown = [{k: v for k, v in (c.get("config") or {}).items() if k != "run"} for c in cells]
    return sum(json.dumps(c, sort_keys=True) not in keys for c in shown)
