"""The scripts of examples/ run (issue 24 item 13), each in a fresh process, and the run
comparison gives the CI the bootstrap gives."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from prm_bench.config import load_plan
from prm_bench.orchestrate.runner import RunOptions, run_plan
from tests.conftest import small_config

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [("prms_on_one_image.py", "instances"), ("custom_stimulation.py", "lse: mAP@0.5")],
)
def test_an_example_runs(script, expected, tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout


def test_comparing_two_runs_pairs_their_cells(shapes, tmp_path):
    spec = importlib.util.spec_from_file_location("compare_runs", EXAMPLES / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs = []
    for name, alpha in (("a", 0.8), ("b", 0.0)):
        tree = small_config(shapes, retrieval={"alpha": alpha}, run={"name": name})
        runs.append(run_plan(load_plan(tree).with_run(jobs=1), RunOptions(tmp_path)).run_dir)
    (row,) = module.compare(runs[0], runs[1], "mAP@0.5", resamples=200)
    (same,) = module.compare(runs[0], runs[0], "mAP@0.5", resamples=200)
    assert same["difference"] == 0.0 and same["verdict"] == "inconclusive"
    assert row["low"] <= row["difference"] <= row["high"]
