import subprocess
import sys

import pytest

from prm_bench.config import load_plan
from prm_bench.orchestrate.worker import Placement, execute_tasks
from prm_bench.stages.errors import StageError
from prm_bench.stages.store import Store
from tests.conftest import small_config


def test_an_orphaned_task_records_nothing(shapes, tmp_path):
    store = Store(tmp_path, guard=lambda: (_ for _ in ()).throw(StageError("gone")))
    store.reset("train", "k")
    with pytest.raises(StageError, match="gone"):
        store.complete("train", "k")
    assert not store.is_done("train", "k")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    cell = load_plan(small_config(shapes)).cells[0]
    where = Placement("cpu", threads=2, slot=0, parent=dead.pid)
    (outcome,) = execute_tasks("train", [cell], str(tmp_path / "store"), where)
    assert not outcome.ok and "orphaned" in outcome.error
    assert not Store(tmp_path / "store").is_done("train", cell.keys["train"])
