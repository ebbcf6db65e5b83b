import pandas as pd
import pytest

from prm_bench.config import ConfigError, RunSettings, load_plan
from prm_bench.orchestrate.executors import EXECUTORS, LocalExecutor, make_executor
from prm_bench.orchestrate.runner import RunOptions, run_plan
from tests.conftest import comparable, tiny_config


def square(x: int, y: int) -> int:
    return x * x + y


def test_local_executor_maps_in_and_out_of_process():
    for jobs in (1, 2):
        assert sorted(LocalExecutor(jobs).map(square, [(1, 0), (2, 1), (3, 2)])) == [1, 5, 11]
    assert list(LocalExecutor(2).map(square, [])) == []


def test_unknown_executor_and_missing_scheduler_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'ray'"):
        EXECUTORS.get("ray")
    with pytest.raises(ConfigError, match=r"run\.executor: Input should be 'local', 'dask' or"):
        load_plan({"run": {"executor": "ray"}})
    with pytest.raises(ValueError, match="needs --scheduler"):
        make_executor(RunSettings(executor="dask"), tmp_path)


def test_the_executor_setting_offers_exactly_the_registered_executors():
    offered = RunSettings.model_fields["executor"].annotation.__args__
    assert list(offered) == EXECUTORS.names()
    for name in offered:
        assert EXECUTORS.describe(name)[1]


def test_dask_cluster_on_loopback_gives_the_local_results(shapes_root, tmp_path):
    distributed = pytest.importorskip("distributed")
    plan = load_plan(tiny_config(shapes_root))
    local = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / "local")).results
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True
    )
    try:
        settings = RunSettings(executor="dask", jobs=2, scheduler=cluster.scheduler_address)
        executor = make_executor(settings, tmp_path)
        assert executor.client.scheduler.address.startswith("tcp://127.0.0.1")
        remote = run_plan(plan, RunOptions(tmp_path / "dask"), executor).results
        executor.client.close()
    finally:
        cluster.close()
    pd.testing.assert_frame_equal(comparable(local), comparable(remote))


def test_submitit_local_job_arrays_give_the_local_results(shapes_root, tmp_path):
    pytest.importorskip("submitit")
    from prm_bench.orchestrate.executors import SlurmExecutor

    plan = load_plan(tiny_config(shapes_root))
    local = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / "local")).results
    executor = SlurmExecutor(tmp_path / "slurm", jobs=2, timeout_min=10, cluster="local")
    arrays = run_plan(plan, RunOptions(tmp_path / "slurm-run"), executor).results
    pd.testing.assert_frame_equal(comparable(local), comparable(arrays))
    assert list((tmp_path / "slurm").glob("*/*_result.pkl"))  # the jobs really ran through submitit


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_scheduler_or_a_machine_without_slurm_exits_2(
    shapes_root, tmp_path, monkeypatch
):
    """Issue 23 defects 9 and 10: no traceback after the dask timeout, and no silent local
    run behind the name of SLURM."""
    import yaml
    from typer.testing import CliRunner

    from prm_bench.cli import app
    from prm_bench.orchestrate import executors
    from tests.conftest import small_config

    pytest.importorskip("dask.distributed")
    monkeypatch.setattr(executors, "DASK_CONNECT_SECONDS", 1.0)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch here
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes_root)))
    base = ["run", str(config), "--runs-dir", str(tmp_path / "runs")]
    address = f"tcp://127.0.0.1:{free_port()}"
    for extra, named in (
        (["--executor", "dask", "--scheduler", address], address),
        (["--executor", "slurm"], "SLURMisnotonthismachine"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert named in "".join(result.output.split()) and "Traceback" not in result.output
