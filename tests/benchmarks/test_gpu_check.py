"""The prepared GPU check's CPU path (`python -m benchmarks.gpu_check --dry`) runs here,
so the script a lent GPU gets is known to work."""

import json

import numpy as np
import pandas as pd
import torch

from benchmarks import gpu_check
from prm_bench.stages.infer import pack_prms
from prm_bench.stages.store import save_npz


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


def stored_prms(folder, prms: np.ndarray) -> None:
    """An inference folder holding one image with these PRMs, as the infer stage packs them."""
    values, scale = pack_prms(torch.as_tensor(prms))
    save_npz(folder / "a.npz", prm_values=values, prm_scale=scale)


def test_the_comparison_flags_a_device_that_disagrees(tmp_path):
    """The comparison behind the check fails where it should: a metric 0.7 points off, a
    PRM off by 1e-3, another number of peaks."""
    cpu = pd.DataFrame({"cell": [0, 0], "metric": ["mAP@0.5", "abo"], "value": [50.0, 40.0]})
    folders = [tmp_path / "cpu", tmp_path / "dev"]
    for folder in folders:
        folder.mkdir()
    prms = np.full((2, 4, 4), 1 / 16, np.float32)
    stored_prms(folders[0], prms)
    stored_prms(folders[1], prms)
    same = gpu_check.compare_runs(cpu, cpu.copy(), folders)
    assert same["within_tolerance"] and same["max_metric_difference"] == 0.0
    assert same["max_prm_difference"] == 0.0 and same["metrics"] == 2
    off = cpu.assign(value=[50.7, 40.0])
    result = gpu_check.compare_runs(cpu, off, folders)
    assert not result["within_tolerance"]
    assert result["max_metric_difference"] == np.float64(50.7) - 50.0
    assert result["differences"] == [
        {"cell": 0, "metric": "mAP@0.5", "value_cpu": 50.0, "value_dev": 50.7}
    ]
    shifted = prms.copy()
    shifted[0, 0, 0] += 1e-3
    stored_prms(folders[1], shifted)
    assert gpu_check.compare_runs(cpu, cpu, folders)["max_prm_difference"] > 1e-4
    stored_prms(folders[1], prms[:1])
    fewer = gpu_check.compare_runs(cpu, cpu, folders)
    assert fewer["max_prm_difference"] == float("inf") and not fewer["within_tolerance"]
