"""Fault injection: every kind of stored file, damaged every way, then a rerun. The rerun
recomputes only the damaged stage and gives results identical to the clean run."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import load_plan
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.rundir import environments
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages.store import Store
from tests.conftest import comparable, tiny_config


@pytest.fixture(scope="module")
def clean(tmp_path_factory, make_shapes):
    root = make_shapes(seed=11, n_train=24, n_val=6, size=64, classes=3)
    config = tiny_config(root)
    plan = bind_data(load_plan(config))
    runs = tmp_path_factory.mktemp("runs")
    summary = run_plan(plan.with_run(jobs=1), RunOptions(runs))
    assert not summary.failed_cells
    return plan, runs


def plan_config(plan) -> dict:
    return tiny_config(plan.cells[0].config.data.root)


def sorted_results(path) -> pd.DataFrame:
    return pd.read_csv(path).sort_values(["cell", "metric"]).reset_index(drop=True)


# (stage, file name or "<first image>", stages a rerun executes)
STORED = [
    ("train", "model.safetensors", {"train": 1, "infer": 0, "retrieve": 0, "evaluate": 0}),
    ("train", "log.json", {"train": 1, "infer": 0, "retrieve": 0, "evaluate": 0}),
    ("infer", "<first image>", {"train": 0, "infer": 1, "retrieve": 0, "evaluate": 0}),
    ("retrieve", "results.json", {"train": 0, "infer": 0, "retrieve": 1, "evaluate": 0}),
    ("evaluate", "metrics.json", {"train": 0, "infer": 0, "retrieve": 0, "evaluate": 1}),
    ("evaluate", "per_image.npz", {"train": 0, "infer": 0, "retrieve": 0, "evaluate": 1}),
]


def damage(path, fault: str) -> None:
    size = path.stat().st_size
    if fault == "truncate":
        os.truncate(path, size // 2)
    elif fault == "zero":
        os.truncate(path, 0)
    elif fault == "garbage":  # same size, so only the content tells
        path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(size)))
    else:
        path.unlink()


@pytest.mark.parametrize("fault", ["truncate", "zero", "garbage", "delete"])
@pytest.mark.parametrize(
    ("stage", "name", "executed"), STORED, ids=[f"{s}-{n}" for s, n, _ in STORED]
)
def test_a_damaged_file_is_recomputed_and_results_are_unchanged(
    clean, tmp_path, stage, name, executed, fault
):
    plan, runs = clean
    shutil.copytree(runs / plan.name, tmp_path / plan.name)
    key = plan.cells[0].keys[stage]
    folder = tmp_path / plan.name / "store" / stage / key
    target = sorted(folder.glob("*.npz"))[0] if name == "<first image>" else folder / name
    damage(target, fault)
    events = []
    options = RunOptions(tmp_path, on_event=lambda kind, info: events.append((kind, info)))
    summary = run_plan(plan.with_run(jobs=1), options)
    assert summary.executed == executed and not summary.failed_cells
    # the recovery is named (issue 23 defect 7): in run.log and to the console's handler
    why = "is missing" if fault == "delete" else "differs from its record"
    line = f"{stage} {key} was done but {target.name} {why}"
    assert line in (tmp_path / plan.name / "run.log").read_text()
    assert [i["line"] for k, i in events if k == "recovered"] == [f"{line}: computing it again"]
    pd.testing.assert_frame_equal(
        sorted_results(tmp_path / plan.name / "results.csv"),
        sorted_results(runs / plan.name / "results.csv"),
    )


@pytest.mark.parametrize("fault", ["truncate", "zero", "garbage"])
def test_an_interrupted_inference_resumes_only_from_intact_images(clean, tmp_path, fault):
    plan, runs = clean
    shutil.copytree(runs / plan.name, tmp_path / plan.name)
    folder = tmp_path / plan.name / "store" / "infer" / plan.cells[0].keys["infer"]
    (folder / "done.json").unlink()  # the stage was interrupted after its images were written
    damaged = sorted(folder.glob("*.npz"))[-1]
    damage(damaged, fault)
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert summary.executed["infer"] == 1 and not summary.failed_cells
    log = (tmp_path / plan.name / "run.log").read_text()
    assert f"{damaged.name} is damaged: inferring it again" in log  # named, not silent
    clean_copy = runs / plan.name / "store" / "infer" / folder.name / damaged.name
    assert damaged.read_bytes() == clean_copy.read_bytes()  # inferred again, not trusted
    pd.testing.assert_frame_equal(
        sorted_results(tmp_path / plan.name / "results.csv"),
        sorted_results(runs / plan.name / "results.csv"),
    )


def test_results_do_not_depend_on_jobs_and_the_environment_is_recorded(clean, tmp_path):
    plan, runs = clean
    summary = run_plan(
        plan.with_run(jobs=2), RunOptions(tmp_path)
    )  # two worker processes, threads fixed per task
    assert not summary.failed_cells
    pd.testing.assert_frame_equal(
        sorted_results(tmp_path / plan.name / "results.csv"),
        sorted_results(runs / plan.name / "results.csv"),
    )
    record = json.loads(
        (tmp_path / plan.name / "store" / "train" / plan.cells[0].keys["train"])
        .joinpath("done.json")
        .read_text()
    )
    assert record["environment"]["threads"] == plan.run.threads
    assert record["device"] == "cpu"
    # each task's placement is logged (issue 22: one GPU per worker on CUDA)
    placed = [line for line in (tmp_path / plan.name / "run.log").read_text().splitlines()
              if ": on cpu (slot " in line]  # fmt: skip
    assert any(" train " in line for line in placed) and len(placed) >= 4
    assert len(environments(plan, Store(tmp_path / plan.name / "store"))) == 1


def test_a_resume_in_another_environment_is_reported(clean, tmp_path):
    plan, runs = clean
    shutil.copytree(runs / plan.name, tmp_path / plan.name)
    folder = tmp_path / plan.name / "store" / "evaluate" / plan.cells[0].keys["evaluate"]
    (folder / "done.json").unlink()
    other = load_plan({**plan_config(plan), "run": {"threads": 1}})
    run_plan(other.with_run(jobs=1), RunOptions(tmp_path))
    groups = environments(plan, Store(tmp_path / plan.name / "store"))
    assert len(groups) == 2 and any("threads 1" in g for g in groups)


def _kill_during(stage: str, config_path, runs, jobs: int = 1) -> None:
    """Start a run in a subprocess and SIGKILL it once `stage` has started writing."""
    command = [sys.executable, "-m", "prm_bench", "run", str(config_path),
               "--runs-dir", str(runs), "--jobs", str(jobs)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = runs / config_path.stem / "store" / stage
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and not any(store.glob("*/*")):
        time.sleep(0.01)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("stage", ["train", "infer", "retrieve", "evaluate"])
def test_a_run_killed_in_any_stage_resumes_to_the_clean_results(clean, tmp_path, stage):
    plan, runs = clean
    config_path = tmp_path / f"{plan.name}.yaml"
    config_path.write_text(yaml.safe_dump(plan_config(plan)))
    _kill_during(stage, config_path, tmp_path / "runs")
    status = CliRunner().invoke(
        app, ["status", str(tmp_path / "runs" / plan.name)], env={"COLUMNS": "300"}
    )
    assert status.exit_code == 0, status.output  # a killed run is still a run directory
    summary = run_plan(load_plan(config_path).with_run(jobs=1), RunOptions(tmp_path / "runs"))
    assert not summary.failed_cells
    pd.testing.assert_frame_equal(
        sorted_results(tmp_path / "runs" / plan.name / "results.csv"),
        sorted_results(runs / plan.name / "results.csv"),
    )


def test_a_run_killed_with_one_job_and_resumed_with_two_gives_the_clean_results(clean, tmp_path):
    plan, runs = clean
    config_path = tmp_path / f"{plan.name}.yaml"
    config_path.write_text(yaml.safe_dump(plan_config(plan)))
    _kill_during("infer", config_path, tmp_path / "runs", jobs=1)
    run_plan(load_plan(config_path).with_run(jobs=2), RunOptions(tmp_path / "runs"))
    pd.testing.assert_frame_equal(
        sorted_results(tmp_path / "runs" / plan.name / "results.csv"),
        sorted_results(runs / plan.name / "results.csv"),
    )


def test_a_full_disk_while_writing_results_exits_2_naming_the_run(clean, tmp_path, monkeypatch):
    plan, runs = clean
    shutil.copytree(runs / plan.name, tmp_path / plan.name)
    config_path = tmp_path / f"{plan.name}.yaml"
    config_path.write_text(yaml.safe_dump(plan_config(plan)))

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("prm_bench.orchestrate.rundir.write_atomic", full)
    result = CliRunner().invoke(
        app, ["run", str(config_path), "--runs-dir", str(tmp_path)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2
    flat = "".join(result.output.split())  # rich wraps long paths
    assert "cannotwritetheresults" in flat and "Nospaceleft" in flat


# caches beside the proposals: the embedded gallery (RLE json) and the prepared galleries
CACHES = [("embedded-*", "*.json"), ("prepared/*", "*.npz")]


@pytest.mark.parametrize("fault", ["truncate", "zero", "garbage", "delete"])
@pytest.mark.parametrize(("folder", "pattern"), CACHES, ids=["embedded", "prepared"])
def test_a_damaged_proposal_cache_is_recomputed(clean, tmp_path, folder, pattern, fault):
    plan, runs = clean
    shutil.copytree(runs / plan.name, tmp_path / plan.name)
    store = tmp_path / plan.name / "store"
    # the embedded proposals are kept per dataset, the prepared galleries per gallery
    damage(sorted((store / "proposals").glob(f"*/{folder}/{pattern}"))[0], fault)
    for record in (store / "retrieve").glob("*/done.json"):
        record.unlink()  # retrieval reruns and reads the damaged cache
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert summary.executed["retrieve"] == 2 and not summary.failed_cells
    pd.testing.assert_frame_equal(
        sorted_results(tmp_path / plan.name / "results.csv"),
        sorted_results(runs / plan.name / "results.csv"),
    )


def test_a_run_killed_mid_training_shows_its_epoch_then_resumes_to_the_same_model(
    shapes_root, tmp_path
):
    """SIGKILL after the first epoch of four: `status` showed the running cell's epoch,
    then says it stopped; the rerun resumes the training from its epoch state and ends
    with the model and results of an uninterrupted run."""
    tree = tiny_config(shapes_root, grid={"retrieval.terms": ["full"]}, train={"epochs": 4})
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(tree))
    clean = run_plan(load_plan(config).with_run(jobs=1), RunOptions(tmp_path / "clean"))
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "prm_bench", "run", str(config), "--runs-dir", str(runs)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plan = bind_data(load_plan(config))
    folder = Store(runs / "long" / "store").path("train", plan.cells[0].keys["train"])
    deadline = time.time() + 120
    while time.time() < deadline and not (folder / ".resume.json").is_file():
        time.sleep(0.02)
    status = CliRunner().invoke(app, ["status", str(runs / "long")], env={"COLUMNS": "300"})
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    flat = "".join(status.output.split())  # the table wraps its cells
    assert re.search(r"running\(trainepoch[1-3]/4\)", flat), status.output
    after = CliRunner().invoke(app, ["status", str(runs / "long")], env={"COLUMNS": "300"})
    assert "stopped(runthesamecommandtoresume)" in "".join(after.output.split()), after.output
    resumed = run_plan(load_plan(config).with_run(jobs=1), RunOptions(runs))
    assert resumed.executed["train"] == 1 and not resumed.failed_cells
    clean_folder = Store(tmp_path / "clean" / "long" / "store").path(
        "train", plan.cells[0].keys["train"]
    )
    model = "model.safetensors"
    assert (folder / model).read_bytes() == (clean_folder / model).read_bytes()
    pd.testing.assert_frame_equal(comparable(resumed.results), comparable(clean.results))
    second = (runs / "long" / "run.log").read_text().split(" run long: ")[-1]
    assert " epoch 1/4 " not in second and " epoch 4/4 " in second  # resumed, not redone


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("retrieval.alpha=.nan", "retrieval.alpha: Input should be a finite number"),
        ("retrieval.alpha=-1", "retrieval.alpha: Input should be greater than or equal to 0"),
        ("infer.peak_threshold=.nan", "infer.peak_threshold: Input should be a finite number"),
        ("infer.win_size=4", "win_size must be odd"),
        ("infer.win_size=0", "infer.win_size: Input should be greater than or equal to 1"),
        ("infer.win_size=-1", "infer.win_size: Input should be greater than or equal to 1"),
        ("train.weight_decay=-5", "train.weight_decay: Input should be greater than or equal"),
        ("train.seed=99999999999999999999", "train.seed: Input should be less than"),
        ("eval.tolerance=.inf", "eval.tolerance: Input should be a finite number"),
    ],
)
def test_a_bad_value_is_refused_before_any_compute(shapes_root, tmp_path, override, message):
    """Issue 23, defects 3 and 4: NaN, infinities, negative weights and even windows were
    accepted and changed results, or failed only inside a stage."""
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shapes_root)))
    words = ["run", str(config), "--set", override, "--dry-run", "--runs-dir", str(tmp_path)]
    result = CliRunner().invoke(app, words, env={"COLUMNS": "300"})
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()  # nothing ran, nothing was written


def test_an_override_of_a_grid_axis_is_refused_not_dropped(shapes_root, tmp_path):
    """Issue 23, defect 2: `--set stimulation.name=peek` on a grid over stimulation.name
    exited 0 with the grid's values in every cell."""
    config = tmp_path / "axes.yaml"
    grid = {"stimulation.name": ["peak", "gap"]}
    config.write_text(yaml.safe_dump(tiny_config(shapes_root, grid=grid)))
    words = ["run", str(config), "--dry-run", "--runs-dir", str(tmp_path)]
    result = CliRunner().invoke(app, [*words, "--set", "stimulation.name=peek"])
    assert result.exit_code == 2 and "stimulation.name is a grid axis" in result.output
    alone = CliRunner().invoke(app, [*words, "--set", "grid={}", "stimulation.name=gap"])
    assert alone.exit_code == 0, alone.output
    assert "1 cells" in alone.output


def one_line_error(result, *words: str) -> None:
    """Exit 2 with one line that names what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    for word in words:
        assert word in result.output, (word, result.output)


def test_an_evaluation_split_without_objects_is_refused_before_compute(make_shapes, tmp_path):
    """Issue 23, defect 8: a COCO val json without annotations ran to the end with every AP
    empty; one without images failed late and obscurely."""
    root = make_shapes(seed=41, n_train=6, n_val=3, size=32, classes=2)
    coco = tmp_path / "coco"
    shutil.copytree(root, coco)
    val = coco / "annotations" / "instances_val.json"
    content = json.loads(val.read_text())
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(coco, data={"name": "coco"})))
    words = ["run", str(config), "--dry-run", "--runs-dir", str(tmp_path / "runs")]
    val.write_text(json.dumps({**content, "annotations": []}))
    one_line_error(CliRunner().invoke(app, words), "holds no labelled object")
    val.write_text(json.dumps({**content, "images": [], "annotations": []}))
    one_line_error(CliRunner().invoke(app, words), "holds no image")


@pytest.mark.parametrize("manifest", ["[]", '{"cells": [{"index": 0, "config": "x"}]}'])
def test_a_report_of_a_damaged_manifest_is_one_line(clean, tmp_path, manifest):
    """Issue 23, defect 9: `report` on a manifest that is `[]` or holds a string config."""
    plan, runs = clean
    shutil.copytree(runs / plan.name, tmp_path / plan.name)
    (tmp_path / plan.name / "manifest.json").write_text(manifest)
    result = CliRunner().invoke(app, ["report", str(tmp_path / plan.name)])
    one_line_error(result, "manifest.json", "is not a prm-bench manifest")


def test_a_report_out_under_a_file_is_one_line(clean, tmp_path):
    plan, runs = clean
    (tmp_path / "file").write_text("x")
    words = ["report", str(runs / plan.name), "--out", str(tmp_path / "file" / "report")]
    one_line_error(CliRunner().invoke(app, words), "cannot write the report in")


def test_a_long_run_name_and_a_yaml_alias_bomb_are_refused(tmp_path):
    """Issue 23, defect 9: a 300-character run.name (OSError even with --dry-run) and a
    1.3 KB alias bomb (MemoryError after 48 s and 2.8 GB)."""
    long = tmp_path / "long.yaml"
    long.write_text(yaml.safe_dump({"run": {"name": "a" * 300}}))
    one_line_error(CliRunner().invoke(app, ["run", str(long), "--dry-run"]), "200 characters")
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    levels += [
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    start = time.perf_counter()
    one_line_error(CliRunner().invoke(app, ["run", str(bomb), "--dry-run"]), "alias bomb")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("seeds", [[0, 1], [0]], ids=["both-tasked", "one-never-tasked"])
def test_no_worker_outlives_its_run_after_kill_9(shapes_root, tmp_path, seeds):
    """Issue 23, defect 5: after kill -9 of the main process with --jobs 2, both joblib
    workers lived 230-370 s. Every worker now ends within seconds, the one that never got
    a task (one training for two workers) too."""
    psutil = pytest.importorskip("psutil")
    tree = tiny_config(shapes_root, grid={"train.seed": seeds}, train={"epochs": 30})
    config = tmp_path / "orphans.yaml"
    config.write_text(yaml.safe_dump(tree))
    command = [sys.executable, "-m", "prm_bench", "run", str(config), "--jobs", "2",
               "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    main = psutil.Process(process.pid)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "runs").rglob("events.jsonl"))) < len(
        seeds
    ):
        time.sleep(0.1)  # the trainings run, one in each worker
    workers = [p for p in main.children(recursive=True)
               if any("popen_loky" in part for part in p.cmdline())]  # fmt: skip
    assert len(workers) == 2, "the run did not start its two workers"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    _, alive = psutil.wait_procs(workers, timeout=5)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for survivor in alive:
        survivor.kill()
    assert not alive, f"{len(alive)} workers outlived their run by more than 5 s"
