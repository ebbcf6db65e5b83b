"""The README's Python examples run as pasted (issue 24 item 7), each in a fresh process:
some add registry entries, which must not leak into other tests."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_a_readme_example_runs_as_pasted(block, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


COUNTS = re.compile(r"`ablations/(\w+)\.yaml`[^\n]*?\((\d+) cells, (\d+) trainings\)")


def test_the_readme_s_cell_and_training_counts_are_the_configs():
    """Issue 24 item 8: the documented counts had drifted from what the dry run says."""
    from prm_bench.config import load_plan

    stated = COUNTS.findall(README.read_text())
    assert {name for name, _, _ in stated} >= {"quick", "claims", "full"}
    for name, cells, trainings in stated:
        plan = load_plan(README.parent / "ablations" / f"{name}.yaml")
        counted = (len(plan.cells), len({c.keys["train"] for c in plan.cells}))
        assert counted == (int(cells), int(trainings)), f"ablations/{name}.yaml"
