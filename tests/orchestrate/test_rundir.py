import pytest

from prm_bench.config import load_plan
from prm_bench.orchestrate.rundir import RunLockedError, run_lock
from prm_bench.orchestrate.runner import RunOptions, run_plan
from tests.conftest import tiny_config


def test_a_second_run_on_the_same_directory_is_refused(shapes_root, tmp_path):
    plan = load_plan(tiny_config(shapes_root))
    with (
        run_lock(tmp_path / plan.name),
        pytest.raises(RunLockedError, match="another prm-bench run"),
    ):
        run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
