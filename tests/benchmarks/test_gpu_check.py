"""The prepared GPU check's CPU path (`python -m benchmarks.gpu_check --dry`) runs here,
so the script a lent GPU gets is known to work."""

import json

from benchmarks import gpu_check


def test_the_gpu_check_dry_path_runs_and_finds_the_cpu_equal_to_itself(tmp_path, capsys):
    assert gpu_check.main(["--dry", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check_dry.json").read_text())
    grid = report["grid"]
    assert grid["device"] == "cpu" and grid["metrics"] > 0
    # the same checkpoint on the same device: the same numbers, not merely close ones
    assert grid["max_metric_difference"] == 0.0 and grid["max_prm_difference"] == 0.0
    (prm,) = report["prm"]
    assert max(prm["max_abs_difference_to_original"].values()) < 1e-6
    assert "max metric difference 0" in capsys.readouterr().out
