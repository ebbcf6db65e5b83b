"""The prepared GPU check's CPU path (`python -m benchmarks.gpu_check --dry`) runs here,
so the script a lent GPU gets is known to work."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import gpu_check
from prm_bench.config import load_plan
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
    output = capsys.readouterr().out
    assert "max metric difference 0" in output
    plans = {plan["plan"]: plan for plan in report["projection"]["plans"]}
    assert set(plans) == {"voc2012", "full"} and "projected voc2012:" in output
    for name, plan in plans.items():  # every unique training of the config, once
        cells = load_plan(f"ablations/{name}.yaml").cells
        assert plan["unique"]["train"] == len({c.keys["train"] for c in cells})
        assert plan["cells"] == len(cells) and plan["total_hours"] > 0


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


def test_the_projection_counts_each_unique_stage_once_by_hand():
    """A VOC plan of 4 cells: 2 trainings (seeds), each with 2 retrieval variants over
    one inference. At 448 px, train_aug 10,582 images, val 1,449, 2 epochs, x8 stimulation:
    training = 2 x 2 x (10,582 x 0.02 + 1,449 x 0.005) s; inference = 2 x 1,449 x 0.1 s;
    retrieval = 4 x 1,449 x 0.01 s. A 224-px cell would cost a quarter."""
    from benchmarks.projection import project
    from prm_bench.config import load_plan

    config = {
        "data": {"name": "voc", "root": "v", "train_split": "x/train_aug.txt",
                 "eval_split": "val", "image_size": 448},
        "backbone": {"name": "resnet50"},
        "train": {"epochs": 2},
        "stimulation": {"name": "peak", "options": {"upsample": 8}},
        "grid": {"train.seed": [0, 1], "retrieval.terms": ["full", "no-class"]},
    }  # fmt: skip
    timings = {"resnet50": {"size": 448, "train": 1.0, "train_x8": 0.02, "forward": 0.005,
                            "infer": 0.1, "retrieve": 0.01, "infer_mean_peaks": 20.0}}  # fmt: skip
    result = project(load_plan(config), timings)
    assert result["unique"] == {"train": 2, "infer": 2, "retrieve": 4}
    expected = {
        "train": 2 * 2 * (10_582 * 0.02 + 1_449 * 0.005) / 3600,
        "infer": 2 * 1_449 * 0.1 / 3600,
        "retrieve": 4 * 1_449 * 0.01 / 3600,
    }
    assert result["hours"] == pytest.approx(expected)
    assert result["total_hours"] == pytest.approx(sum(expected.values()))
    config["data"]["image_size"] = 224
    assert project(load_plan(config), timings)["total_hours"] == pytest.approx(
        sum(expected.values()) / 4
    )
    config["backbone"]["name"] = "resnet10t"
    assert project(load_plan(config), timings)["projected_at_resnet50_cost"] == ["resnet10t"]
