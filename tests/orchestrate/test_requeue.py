"""Preemption and worker loss mid-training (issue 22 item 4): a training signalled by
the scheduler (submitit's local executor standing in for SLURM) saves its state after
the step in progress and is requeued, resuming from that step; one whose dask worker is
killed runs again on another worker from its last finished epoch. Both end with the
model and results of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from prm_bench.config import load_plan
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages.store import Store
from tests.conftest import comparable, tiny_config

MODEL = "model.safetensors"


@pytest.fixture(scope="module")
def uninterrupted(shapes_root, tmp_path_factory):
    """A 4-epoch training run once without interruption, with its bound plan."""
    config = tiny_config(shapes_root, grid={"retrieval.terms": ["full"]}, train={"epochs": 4},
                         backbone={"name": "resnet10t"})  # fmt: skip
    config["data"]["image_size"] = 128  # epochs of about a second: time to signal one
    plan = bind_data(load_plan(config))
    runs = tmp_path_factory.mktemp("clean")
    summary = run_plan(plan.with_run(jobs=1), RunOptions(runs))
    assert not summary.failed_cells
    return plan, summary, train_folder(runs, plan)


def train_folder(runs: Path, plan) -> Path:
    return Store(runs / plan.name / "store").path("train", plan.cells[0].keys["train"])


def when_epoch_state(folder: Path, act: Callable[[], None]) -> threading.Thread:
    """A thread that runs `act` once the training in `folder` has finished an epoch
    (its resume state is there), while it is still training."""

    def watch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not (folder / ".resume.json").is_file():
            time.sleep(0.02)
        act()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def assert_resumed_to_the_clean_run(summary, uninterrupted, runs: Path) -> None:
    plan, clean, clean_folder = uninterrupted
    assert not summary.failed_cells
    folder = train_folder(runs, plan)
    assert (folder / MODEL).read_bytes() == (clean_folder / MODEL).read_bytes()
    pd.testing.assert_frame_equal(comparable(summary.results), comparable(clean.results))
    epochs = [json.loads(line)["epoch"] for line in (folder / "events.jsonl").open()]
    assert epochs == [1, 2, 3, 4]  # each epoch once: resumed, and no epoch logged twice


def test_a_training_signalled_by_slurm_is_requeued_and_resumes(uninterrupted, tmp_path):
    pytest.importorskip("submitit")
    from prm_bench.orchestrate.executors import SlurmExecutor

    plan = uninterrupted[0]
    runs = tmp_path / "runs"
    executor = SlurmExecutor(tmp_path / "slurm", jobs=1, timeout_min=10, cluster="local")
    signalled: list[int] = []

    def preempt() -> None:
        # what SLURM does on preemption or near the time limit: the job's processes get
        # submitit's signal (USR2); the training's process is the one in its live file
        from submitit.local.local import LocalJobEnvironment

        (live,) = (runs / plan.name / "live").glob("train-*.json")
        pid = json.loads(live.read_text())["pid"]
        os.kill(pid, LocalJobEnvironment._usr_sig())
        signalled.append(pid)

    watcher = when_epoch_state(train_folder(runs, plan), preempt)
    summary = run_plan(plan, RunOptions(runs), executor)
    watcher.join(timeout=5)
    assert signalled, "the training finished before it could be signalled"
    log = (runs / plan.name / "run.log").read_text()
    assert "preempted: state saved mid-epoch, handing over to the scheduler" in log
    assert "signalled by the scheduler (preemption or timeout): requeued" in log
    train_key = plan.cells[0].keys["train"]
    assert log.count(f"train {train_key}: on cpu") == 2  # started, then requeued
    assert " epoch 1/4 " in log.split("requeued")[0]
    assert " epoch 1/4 " not in log.split("requeued")[1]  # resumed after epoch 1 or later
    assert_resumed_to_the_clean_run(summary, uninterrupted, runs)


def test_a_training_whose_dask_worker_dies_resumes_on_another(uninterrupted, tmp_path):
    distributed = pytest.importorskip("distributed")
    from prm_bench.orchestrate.executors import DaskExecutor

    plan = uninterrupted[0]
    runs = tmp_path / "runs"
    folder = train_folder(runs, plan)
    killed: list[int] = []

    def kill_worker() -> None:
        (live,) = (runs / plan.name / "live").glob("train-*.json")
        pid = json.loads(live.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # the worker process, mid-training
        killed.append(pid)

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True
    )
    try:
        executor = DaskExecutor(cluster.scheduler_address)
        watcher = when_epoch_state(folder, kill_worker)
        summary = run_plan(plan, RunOptions(runs), executor)
        watcher.join(timeout=5)
        executor.client.close()
    finally:
        cluster.close()
    assert killed and killed[0] != os.getpid()
    log = (runs / plan.name / "run.log").read_text()
    train_key = plan.cells[0].keys["train"]
    starts = [line for line in log.splitlines() if f"train {train_key}: on cpu" in line]
    assert len(starts) == 2 and f"pid {killed[0]}," in starts[0]
    assert f"pid {killed[0]}," not in starts[1]  # another worker took it up
    assert_resumed_to_the_clean_run(summary, uninterrupted, runs)
