"""Where stage tasks run: local processes, a dask cluster, or SLURM job arrays.

An executor maps a function over argument tuples and yields the results (in any order).
The harness never schedules across machines itself: `local` is joblib's process pool,
`dask` is joblib's dask backend against a running scheduler (dask-jobqueue on SLURM/PBS,
dask-cuda on multi-GPU nodes), and `slurm` submits one job per task as a submitit job array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol


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
        from joblib import Parallel, delayed

        if not arguments:
            return iter(())
        return Parallel(n_jobs=self.jobs, return_as="generator_unordered")(
            delayed(fn)(*a) for a in arguments
        )


class DaskExecutor:
    """joblib's dask backend on the cluster behind `scheduler` (an address or a Client)."""

    def __init__(self, scheduler: Any) -> None:
        from dask.distributed import Client

        self.client = scheduler if isinstance(scheduler, Client) else Client(scheduler)

    def map(self, fn: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        """Results of all tasks (the backend needs the client while they run)."""
        from joblib import Parallel, delayed, parallel_config

        if not arguments:
            return []
        with parallel_config(backend="dask", wait_for_workers_timeout=60):
            return Parallel(n_jobs=-1)(delayed(fn)(*a) for a in arguments)


class SlurmExecutor:
    """One submitit job per task, submitted as a job array (SLURM when `srun` exists,
    submitit's local executor otherwise or when `cluster="local"`)."""

    def __init__(
        self,
        folder: str | Path,
        jobs: int = 8,
        timeout_min: int = 240,
        cluster: str | None = None,
        **parameters: Any,
    ) -> None:
        import submitit

        self.executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster)
        self.executor.update_parameters(
            timeout_min=timeout_min, slurm_array_parallelism=jobs, **parameters
        )

    def map(self, fn: Callable[..., Any], arguments: Sequence[tuple]) -> list[Any]:
        """Results of all array jobs (waits for them)."""
        if not arguments:
            return []
        jobs = self.executor.map_array(fn, *zip(*arguments, strict=True))
        return [job.result() for job in jobs]


def make_executor(
    kind: str, jobs: int, scheduler: str | None = None, folder: str | Path | None = None
) -> Executor:
    """The executor called `kind` (`local`, `dask` or `slurm`)."""
    if kind == "local":
        return LocalExecutor(jobs)
    if kind == "dask":
        if not scheduler:
            raise ValueError("the dask executor needs --scheduler ADDRESS (e.g. tcp://host:8786)")
        return DaskExecutor(scheduler)
    if kind == "slurm":
        return SlurmExecutor(folder or "slurm", jobs=jobs)
    raise ValueError(f"unknown executor {kind!r} (choose local, dask or slurm)")
