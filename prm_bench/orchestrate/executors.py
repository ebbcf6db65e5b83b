"""Where stage tasks run: local processes, a dask cluster, or SLURM job arrays.

An executor maps a function over argument tuples and yields the results (in any order).
The harness never schedules across machines itself: `local` is joblib's process pool,
`dask` is joblib's dask backend against a running scheduler (dask-jobqueue on SLURM/PBS,
dask-cuda on multi-GPU nodes), and `slurm` submits one job per task as a submitit job array.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prm_bench.config import ConfigError, RunSettings
from prm_bench.registry import Registry


class Executor(Protocol):
    """Runs `fn(*args)` for every argument tuple and yields the results."""

    def map(self, fn: Callable[..., Any], arguments: Sequence[tuple]) -> Iterable[Any]:
        """Results of the calls, in any order."""
        ...


class LocalExecutor:
    """joblib processes on this machine (`jobs` at a time; 1 runs in-process)."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs

    def map(self, fn: Callable[..., Any], arguments: Sequence[tuple]) -> Iterator[Any]:
        """Results as tasks finish."""
        from joblib import Parallel, delayed, parallel_config

        from prm_bench.orchestrate.worker import watch_parent

        if not arguments:
            return iter(())
        # every pool worker watches this process from its start, the ones never given a
        # task too: none outlives a run killed with -9 (loky would keep idle ones 300 s)
        with parallel_config(backend="loky", initializer=watch_parent, initargs=(os.getpid(),)):
            return Parallel(n_jobs=self.jobs, return_as="generator_unordered")(
                delayed(fn)(*a) for a in arguments
            )


DASK_CONNECT_SECONDS = 10.0  # how long a run waits for its dask scheduler to answer


class DaskExecutor:
    """joblib's dask backend on the cluster behind `scheduler` (an address or a Client).

    Raises:
        ConfigError: the scheduler does not answer within `timeout` seconds.
    """

    def __init__(self, scheduler: Any, timeout: float | None = None) -> None:
        from dask.distributed import Client

        if isinstance(scheduler, Client):
            self.client = scheduler
            return
        timeout = timeout or DASK_CONNECT_SECONDS
        try:
            self.client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise ConfigError(
                f"--scheduler {scheduler}: no dask scheduler answered within {timeout:g} s "
                f"({type(err).__name__}); start one (`dask scheduler`) or fix the address"
            ) from None

    def map(self, fn: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        """Results of all tasks (the backend needs the client while they run)."""
        from joblib import Parallel, delayed, parallel_config

        if not arguments:
            return []
        with parallel_config(backend="dask", wait_for_workers_timeout=60):
            return Parallel(n_jobs=-1)(delayed(fn)(*a) for a in arguments)


class SlurmExecutor:
    """One submitit job per task, submitted as a job array: on SLURM, or through
    submitit's local executor with `cluster="local"` (tests). A job that SLURM preempts
    or times out is requeued and resumes (`orchestrate.requeue`); `submitted` holds the
    last map's jobs.

    Raises:
        ConfigError: no `cluster` given and SLURM is not on this machine (submitit would
            quietly run the jobs here, far slower than `local`).
    """

    def __init__(
        self,
        folder: str | Path,
        jobs: int = 8,
        timeout_min: int = 240,
        cluster: str | None = None,
        **parameters: Any,
    ) -> None:
        import shutil

        import submitit

        if cluster is None and shutil.which("sbatch") is None:
            raise ConfigError(
                "--executor slurm: SLURM is not on this machine (no sbatch on PATH); run "
                "with --executor local here (same results), or from a SLURM login node"
            )
        self.executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster)
        self.executor.update_parameters(
            timeout_min=timeout_min, slurm_array_parallelism=jobs, **parameters
        )

    def map(self, fn: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        """Results of all array jobs (waits for them)."""
        from prm_bench.orchestrate.requeue import Requeueable

        if not arguments:
            return []
        task = Requeueable(fn)  # requeued by submitit on preemption or timeout
        self.submitted = self.executor.map_array(task, *zip(*arguments, strict=True))
        return [job.result() for job in self.submitted]


@dataclass(frozen=True)
class ExecutorSpec:
    """An executor kind (`run.executor`, `--executor`): how to make one for a run.

    Attributes:
        name: the registry name.
        make: `make(run, folder)` -> an `Executor`, from the run's settings and the
            folder for its logs.
        description: one line for `prm-bench list`.
    """

    name: str
    make: Callable[[RunSettings, Path], Executor]
    description: str

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        return "-", self.description


def _dask(run: RunSettings, folder: Path) -> Executor:
    if not run.scheduler:
        raise ValueError("the dask executor needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    return DaskExecutor(run.scheduler)


EXECUTORS: Registry[ExecutorSpec] = Registry(
    "executor",
    """Where a run's tasks go: each `ExecutorSpec` makes an `Executor` (map a function over
    argument tuples, yield the results) from the run's settings.""",
)
for _spec in (
    ExecutorSpec(
        "local", lambda run, folder: LocalExecutor(run.jobs), "joblib processes on this machine"
    ),
    ExecutorSpec("dask", _dask, "joblib's dask backend against a running scheduler"),
    ExecutorSpec(
        "slurm",
        lambda run, folder: SlurmExecutor(folder, jobs=run.jobs),
        "submitit job arrays (SLURM; submitit's local executor without srun)",
    ),
):
    EXECUTORS.add(_spec.name, _spec)


def make_executor(run: RunSettings, folder: str | Path) -> Executor:
    """The executor `run.executor` names, for `run.jobs` workers; `folder` holds its logs
    (SLURM)."""
    return EXECUTORS.get(run.executor).make(run, Path(folder))
