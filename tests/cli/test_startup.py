"""Issue 24 item 4: every command took 5.6-12 s because importing the CLI imported torch
and timm. Commands that plan or look, not compute, load neither: `--help`, `list`,
`status` and `run --dry-run` (a fresh interpreter per command, so nothing is loaded
already; how long they take is a benchmark, `cli_start`)."""

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import small_config

HEAVY = ("torch", "timm", "torchvision", "pandas", "matplotlib")


def heavy_imports(*args: str) -> list[str]:
    """Which of the heavy packages a fresh `prm-bench <args>` imported; fails the test on
    an exit code other than 0."""
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: print('LOADED', json.dumps(sorted(set({HEAVY!r}) & "
        "set(sys.modules)))))\n"
        f"sys.argv = ['prm-bench', *{list(args)!r}]\n"
        "from prm_bench.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED "), done.stdout
    return json.loads(last.removeprefix("LOADED "))


def test_importing_the_cli_loads_no_heavy_package():
    code = f"import sys, prm_bench.cli; print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list"], ["list", "stimulations"]])
def test_help_and_list_answer_without_torch(args):
    assert heavy_imports(*args) == []


def test_a_dry_run_plans_without_torch_unless_a_check_needs_it(shapes, tmp_path):
    """A dry run validates every cell (registries, keys, data) without torch; a check
    that needs it loads it: a stimulation's option values are tried on a tensor, and a
    `timm:` backbone is built to see that it is a CNN."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert heavy_imports("run", str(config), "--dry-run", *runs) == []
    tried = heavy_imports("run", str(config), "--dry-run", *runs,
                          "--set", "stimulation.options={upsample: 2}")  # fmt: skip
    assert "torch" in tried and "timm" not in tried
    built = heavy_imports("run", str(config), "--dry-run", *runs,
                          "--set", "backbone.name=timm:test_resnet")  # fmt: skip
    assert "timm" in built
    assert not (tmp_path / "runs").exists()
