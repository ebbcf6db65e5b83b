"""The stage store: content-addressed, atomic, resumable (DESIGN 5).

Every stage output lives in `<root>/<stage>/<key>/`, where the key hashes only the config
fields the stage depends on. Files are written under a temporary name and renamed into
place; a stage is done only when its completion record `done.json` exists and every file
it lists has the recorded size, so a partial or truncated artifact is detected and the
stage recomputed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RECORD = "done.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(handle)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an npz written by `save_npz`; pickled objects are refused."""
    with np.load(path, allow_pickle=False) as content:
        return {key: content[key] for key in content.files}


class Store:
    """Stage outputs under `root`, keyed by (stage, config hash)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        """The folder of one stage output."""
        return self.root / stage / key

    def is_done(self, stage: str, key: str) -> bool:
        """True when the completion record exists and every listed file is intact."""
        folder = self.path(stage, key)
        record = folder / RECORD
        if not record.is_file():
            return False
        try:
            files = json.loads(record.read_text())["files"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return False
        return all(
            (folder / name).is_file() and (folder / name).stat().st_size == size
            for name, size in files.items()
        )

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
        folder = self.path(stage, key)
        missing = [name for name in required or [] if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{stage} {key} did not write {', '.join(missing)}")
        files = {
            str(p.relative_to(folder)): p.stat().st_size
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD and not p.name.startswith(".")
        }
        write_json(folder / RECORD, {"files": files, **(info or {})})

    def record(self, stage: str, key: str) -> dict[str, Any]:
        """The completion record of a finished stage."""
        return json.loads((self.path(stage, key) / RECORD).read_text())

    def reset(self, stage: str, key: str) -> Path:
        """Forget a stage's completion (its files are kept for resuming) and return its folder."""
        folder = self.path(stage, key)
        (folder / RECORD).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def remove(self, stage: str, key: str) -> None:
        """Delete a stage output entirely."""
        shutil.rmtree(self.path(stage, key), ignore_errors=True)
