"""The stage store: content-addressed, atomic, resumable (DESIGN 5).

Every stage output lives in `<root>/<stage>/<key>/`, where the key hashes only the config
fields the stage depends on. Files are written under a temporary name and renamed into
place; a stage is done only when its completion record `done.json` exists and every file
it lists has the recorded size and SHA-256, so a partial, truncated or overwritten
artifact is detected and the stage recomputed. Hashing runs at several hundred MB/s, so
verifying VOC val's PRMs of one model (about 0.2 GB) takes well under a second; a store
verifies each stage once per process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prm_bench.atomic import atomic_path, write_atomic
from prm_bench.hashing import file_digest

RECORD = "done.json"


def write_json(path: Path, value: Any) -> None:
    """Atomically write `value` as JSON."""
    write_atomic(path, json.dumps(value, indent=1, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomically write compressed arrays (read back without pickle)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an npz written by `save_npz`; pickled objects are refused."""
    with np.load(path, allow_pickle=False) as content:
        return {key: content[key] for key in content.files}


def environment() -> dict[str, Any]:
    """What a stage's numbers may depend on besides its config: recorded with it."""
    import torch

    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__}


def _stats(folder: Path, names) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of each named file, (-1, -1) where it is missing."""
    stats = {}
    for name in names:
        try:
            info = (folder / name).stat()
            stats[name] = (info.st_size, info.st_mtime_ns)
        except OSError:
            stats[name] = (-1, -1)
    return stats


class Store:
    """Stage outputs under `root`, keyed by (stage, config hash)."""

    def __init__(self, root: str | Path, guard: Callable[[], None] | None = None) -> None:
        self.root = Path(root)
        # called before anything is recorded: raises when this process must not write
        # (e.g. a worker whose run was killed); see `check`
        self.guard = guard
        # (stage, key) -> (size, mtime) of each file when its content was last verified
        self._verified: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}

    def path(self, stage: str, key: str) -> Path:
        """The folder of one stage output."""
        return self.root / stage / key

    def is_done(self, stage: str, key: str) -> bool:
        """True when the completion record exists and every file it lists has the
        recorded size and content hash (a record without hashes is not trusted)."""
        folder = self.path(stage, key)
        seen = self._verified.get((stage, key))
        if seen is not None and seen == _stats(folder, seen):
            return True
        try:
            files = json.loads((folder / RECORD).read_text())["files"]
            intact = all(
                (folder / name).is_file()
                and (folder / name).stat().st_size == entry["size"]
                and file_digest(folder / name) == entry["sha256"]
                for name, entry in files.items()
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if intact:
            self._verified[(stage, key)] = _stats(folder, [*files, RECORD])
        return intact

    def damage(self, stage: str, key: str) -> str | None:
        """Why a stage that was recorded as done no longer is (the first file found
        missing or changed, or an unreadable record); None when it is done, or was never
        recorded (not run yet, or interrupted before its end)."""
        folder = self.path(stage, key)
        if not (folder / RECORD).exists() or self.is_done(stage, key):
            return None
        try:
            files = json.loads((folder / RECORD).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"its record {RECORD} is unreadable"
        for name, entry in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != entry.get("size") or file_digest(path) != entry.get("sha256"):
                return f"{name} differs from its record"
        return f"its record {RECORD} is incomplete"

    def complete(
        self,
        stage: str,
        key: str,
        info: dict[str, Any] | None = None,
        required: list[str] | None = None,
    ) -> None:
        """Record a stage as done, listing every file in its folder with its size.

        Raises:
            FileNotFoundError: a `required` output is missing (the stage is not done).
        """
        self.check()
        folder = self.path(stage, key)
        missing = [name for name in required or [] if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{stage} {key} did not write {', '.join(missing)}")
        files = {
            str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_digest(p)}
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD and not p.name.startswith(".")
        }
        info = info or {}
        # retrieve and evaluate run on the CPU; train and infer say where they ran
        computed = {**environment(), "device": info.get("device", "cpu")}
        record = {"files": files, "environment": computed, **info}
        write_json(folder / RECORD, record)
        self._verified[(stage, key)] = _stats(folder, [*files, RECORD])

    def check(self) -> None:
        """Raise if this process may no longer write to the store (its guard says so)."""
        if self.guard is not None:
            self.guard()

    def record(self, stage: str, key: str) -> dict[str, Any]:
        """The completion record of a finished stage."""
        return json.loads((self.path(stage, key) / RECORD).read_text())

    def environments(self, stages: list[tuple[str, str]]) -> dict[str, list[str]]:
        """Finished stages grouped by the environment (and device) they were computed in."""
        groups: dict[str, list[str]] = {}
        for stage, key in stages:
            try:
                record = self.record(stage, key)
            except (OSError, ValueError):
                continue
            described = record.get("environment", {"unrecorded": "-"})
            text = ", ".join(f"{k} {v}" for k, v in sorted(described.items()))
            groups.setdefault(text, []).append(f"{stage}/{key}")
        return groups

    def reset(self, stage: str, key: str) -> Path:
        """Forget a stage's completion (its files are kept for resuming) and return its folder."""
        folder = self.path(stage, key)
        self._verified.pop((stage, key), None)
        (folder / RECORD).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove(self, stage: str, key: str) -> None:
        """Delete a stage output entirely."""
        self._verified.pop((stage, key), None)
        shutil.rmtree(self.path(stage, key), ignore_errors=True)
