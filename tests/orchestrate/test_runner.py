import os
import signal
import subprocess
import sys
import time

import pandas as pd
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import load_plan
from prm_bench.config.keys import stage_keys
from prm_bench.orchestrate.runner import RunOptions, Task, group_tasks, run_plan
from tests.cli.test_startup import heavy_imports
from tests.conftest import comparable, tiny_config


def test_a_second_run_executes_no_stage_and_gives_the_same_results(shapes_root, tmp_path):
    plan = load_plan(tiny_config(shapes_root))
    first = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert first.executed == {"train": 1, "infer": 1, "retrieve": 2, "evaluate": 2}
    assert not first.failed_cells
    assert {"cell", "retrieval.terms", "seed", "protocol", "metric", "value"} <= set(
        first.results.columns
    )
    assert set(first.results.protocol) >= {"voc", "abo", "pointing", "prm-quality", "semantic"}
    second = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert second.executed == {"train": 0, "infer": 0, "retrieve": 0, "evaluate": 0}
    pd.testing.assert_frame_equal(comparable(first.results), comparable(second.results))
    saved = pd.read_csv(tmp_path / plan.name / "results.csv")
    assert len(saved) == len(first.results)
    assert (tmp_path / plan.name / "results.parquet").is_file()
    assert (tmp_path / plan.name / "manifest.json").is_file()


def test_training_is_deterministic_on_cpu(shapes_root, tmp_path):
    plan = load_plan(tiny_config(shapes_root, grid={"retrieval.terms": ["full"]}))
    a = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / "a")).results
    b = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / "b")).results
    pd.testing.assert_frame_equal(comparable(a), comparable(b))


def test_a_new_retrieval_value_runs_only_retrieve_and_evaluate(shapes_root, tmp_path):
    run_plan(load_plan(tiny_config(shapes_root)).with_run(jobs=1), RunOptions(tmp_path))
    wider = load_plan(
        tiny_config(shapes_root, grid={"retrieval.terms": ["full", "no-instance", "no-class"]})
    )
    summary = run_plan(wider.with_run(jobs=1), RunOptions(tmp_path))
    assert summary.executed == {"train": 0, "infer": 0, "retrieve": 1, "evaluate": 1}


def test_a_truncated_artifact_is_detected_and_only_its_stage_recomputed(shapes_root, tmp_path):
    plan = load_plan(tiny_config(shapes_root))
    first = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    before, keys = first.results, first.plan.cells[0].keys
    results = tmp_path / plan.name / "store" / "retrieve" / keys["retrieve"] / "results.json"
    results.write_bytes(results.read_bytes()[:50])
    after = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert after.executed == {"train": 0, "infer": 0, "retrieve": 1, "evaluate": 0}
    pd.testing.assert_frame_equal(comparable(before), comparable(after.results))


def test_a_failing_cell_does_not_stop_the_others(shapes_root, tmp_path):
    grid = {
        "variants": {
            "good": {},
            "broken": {"backbone.weights": str(tmp_path / "missing.safetensors")},
        }
    }
    summary = run_plan(
        load_plan(tiny_config(shapes_root, grid=grid)).with_run(jobs=1), RunOptions(tmp_path)
    )
    assert list(summary.failed_cells) == [1]
    assert "missing.safetensors does not exist" in summary.failed_cells[1]
    assert set(summary.results.cell) == {0}


def test_cli_exit_code_is_1_when_a_cell_fails(shapes_root, tmp_path):
    import yaml

    (tmp_path / "garbage.pth").write_bytes(b"no state dict")  # there, but fails in training
    grid = {"variants": {"good": {}, "broken": {"backbone.weights": "garbage.pth"}}}
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shapes_root, grid=grid), sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")],
                                env={"COLUMNS": "300"})  # fmt: skip
    assert result.exit_code == 1, result.output
    text = "".join(result.output.split())  # the console wraps long lines
    assert "cell1failed" in text and "1/2cellsfinished" in text
    status = CliRunner().invoke(
        app, ["status", str(tmp_path / "runs" / "grid")], env={"COLUMNS": "300"}
    )
    assert status.exit_code == 0 and "failed" in status.output
    # issue 24 item 4: `status` reads the run without torch, timm or pandas
    assert heavy_imports("status", str(tmp_path / "runs" / "grid")) == []


def test_a_killed_run_resumes_and_ends_with_the_same_results(shapes_root, tmp_path):
    import yaml

    config = tmp_path / "kill.yaml"
    config.write_text(
        yaml.safe_dump(
            tiny_config(shapes_root, grid={"retrieval.terms": ["full", "no-instance", "no-class"]})
        )
    )
    command = [
        sys.executable,
        "-m",
        "prm_bench",
        "run",
        str(config),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "runs" / "kill" / "store"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if any((store / "train").glob("*/done.json")):
            break
        time.sleep(0.02)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    plan = load_plan(str(config))
    resumed = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / "runs"))
    assert resumed.executed["train"] == 0  # finished work is never redone
    fresh = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / "fresh"))
    pd.testing.assert_frame_equal(comparable(resumed.results), comparable(fresh.results))


def test_missing_inputs_are_refused_before_any_compute(tmp_path):
    import yaml

    config = tmp_path / "voc.yaml"
    config.write_text(yaml.safe_dump({"data": {"name": "voc", "root": "nowhere/VOCdevkit"}}))
    result = CliRunner().invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
    config.write_text(yaml.safe_dump({"proposals": {"gallery": "mcg", "root": "no-mcg"}}))
    result = CliRunner().invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "proposals.root" in "".join(result.output.split())


def test_a_diverging_training_fails_its_cell_with_a_clear_message(shapes_root, tmp_path):
    plan = load_plan(
        tiny_config(
            shapes_root, train={"optimizer": "sgd", "lr": 1e30}, grid={"retrieval.terms": ["full"]}
        )
    )
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert "training diverged: the loss is" in summary.failed_cells[0]
    log = (tmp_path / plan.name / "run.log").read_text()
    assert "train" in log and "FAILED: training diverged" in log


GRID = {
    "retrieval.terms": ["full", "no-instance", "class-only", "instance+boundary"],
    "retrieval.confidence": ["retrieval", "class", "peak"],
}


def test_groups_follow_what_cells_share_and_split_to_keep_workers_busy(shapes_root):
    plan = load_plan(tiny_config(shapes_root, grid={**GRID, "infer.upsample": [1, 2]}))
    cells = {cell.index: cell for cell in plan.cells}
    tasks = [Task("retrieve", c.keys["retrieve"], [i], False) for i, c in cells.items()]
    for width, sizes in ((1, [12, 12]), (2, [12, 12]), (4, [6, 6, 6, 6]), (5, [6, 6, 6, 3, 3])):
        groups = group_tasks(tasks, cells, width)
        assert sorted(map(len, groups), reverse=True) == sizes
        for group in groups:  # a group never mixes inferences
            assert len({stage_keys(cells[t.cells[0]].config)["infer"] for t in group}) == 1
    assert sorted(t.key for g in groups for t in g) == sorted(t.key for t in tasks)
    trains = [Task("train", "k", [0], False), Task("train", "j", [1], False)]
    assert group_tasks(trains, cells, 1) == [[trains[0]], [trains[1]]]


def test_off_a_terminal_each_epoch_is_a_line_with_its_loss_and_eta(
    shapes_root, tmp_path, monkeypatch
):
    import yaml

    monkeypatch.setenv("PRM_BENCH_PROGRESS_SECONDS", "3600")  # epoch lines only

    config = tmp_path / "epochs.yaml"
    tree = tiny_config(shapes_root, grid={"retrieval.terms": ["full"]}, train={"epochs": 2})
    config.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["run", str(config), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = [line for line in (tmp_path / "epochs" / "run.log").read_text().splitlines()
             if " epoch " in line]  # fmt: skip
    assert [line.split(" epoch ")[1].split()[0] for line in lines] == ["1/2", "2/2"]
    assert all(" loss " in line and " images/s, left " in line for line in lines)
    assert lines[-1].endswith("left 0:00:00")


def test_long_loops_say_where_they_are_every_n_seconds_and_leave_no_live_file(
    shapes_root, tmp_path, monkeypatch
):
    """Issue 22 item 2, off a terminal: with PRM_BENCH_PROGRESS_SECONDS=0 every batch of
    the training and every image of the inference and retrieval is a line in run.log
    (epoch, batch, running loss, images/s, what is left); the live files are gone when
    the run ends."""
    import yaml

    monkeypatch.setenv("PRM_BENCH_PROGRESS_SECONDS", "0")
    config = tmp_path / "loops.yaml"
    tree = tiny_config(shapes_root, grid={"retrieval.terms": ["full"]}, train={"epochs": 2})
    config.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["run", str(config), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    log = (tmp_path / "loops" / "run.log").read_text().splitlines()
    batches = [line for line in log if " batch " in line]
    assert batches and all(" loss " in line and " images/s, left " in line for line in batches)
    assert any(" epoch 2/2 batch " in line for line in batches)  # every epoch says it
    assert any(line.split(" ", 2)[2].startswith("infer ") and " images, left " in line
               for line in log)  # fmt: skip
    assert any(" images, 1 cells, left " in line for line in log)  # retrieval
    assert not list((tmp_path / "loops" / "live").glob("*.json"))
