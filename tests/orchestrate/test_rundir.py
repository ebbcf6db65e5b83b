import json

import pytest

from prm_bench.config import load_plan
from prm_bench.orchestrate.rundir import RunLockedError, plan_from_manifest, run_lock, write_outputs
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages.store import Store
from tests.conftest import small_config, tiny_config


def test_a_second_run_on_the_same_directory_is_refused(shapes_root, tmp_path):
    plan = load_plan(tiny_config(shapes_root))
    with (
        run_lock(tmp_path / plan.name),
        pytest.raises(RunLockedError, match="another prm-bench run"),
    ):
        run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))


def test_a_run_directory_is_read_back_with_the_keys_its_manifest_recorded(shapes, tmp_path):
    plan = load_plan(small_config(shapes)).with_run(device="cpu", threads=1)
    write_outputs(plan, Store(tmp_path / "store"), tmp_path, {"statuses": {0: "done"}})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["run"]["threads"] == 1 and "run" not in manifest["cells"][0]["config"]
    back = plan_from_manifest(tmp_path)
    assert back.cells[0].keys == plan.cells[0].keys and back.run == plan.run
    # the report and status use the recorded keys, not ones recomputed by today's code
    manifest["cells"][0]["keys"]["evaluate"] = "0123456789abcdef"
    # and a manifest from before run settings left the cells still reads
    manifest["cells"][0]["config"]["run"] = {"device": "cpu", "jobs": 1, "threads": 2}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    old = plan_from_manifest(tmp_path)
    assert old.cells[0].keys["evaluate"] == "0123456789abcdef"
    assert old.cells[0].keys["train"] == plan.cells[0].keys["train"]
