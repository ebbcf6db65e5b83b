"""Preemption and timeout on SLURM: every task goes to submitit as a `Requeueable`,
submitit's checkpointing protocol. When SLURM signals a job (preemption, or the time
limit near), submitit asks the callable how to go on; the answer is the same task with
the same arguments, which submitit requeues. The task's stage then picks up from what
it left on disk: a training from the state it saved when signalled (mid-epoch, after a
whole optimizer step: the signal waits for that point, `progress.safe_point`), an
inference from its last written image. What the requeued task computes equals an
uninterrupted run (tests/orchestrate/test_requeue.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import submitit

from prm_bench import progress


class Requeueable(submitit.helpers.Checkpointable):
    """`fn(*args)` as a submitit job that requeues itself when SLURM signals it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        """Run the task, with submitit's preemption handler deferred to a training's next
        safe point (`progress.safe_point`: the state is saved mid-epoch first)."""
        usr = submitit.JobEnvironment._usr_sig()
        handler = signal.getsignal(usr)
        if callable(handler):

            def deferred(signum: int, frame: Any) -> None:
                progress.preemption_arrived(lambda: handler(signum, frame))

            signal.signal(usr, deferred)
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> submitit.helpers.DelayedSubmission:
        """The same task again, said in the run's log (its state is already on disk)."""
        progress.report(
            f"{args[0] if args else 'task'}: signalled by the scheduler (preemption or "
            "timeout): requeued, resuming from the state saved at the signal (a training) "
            "or the last written image"
        )
        return submitit.helpers.DelayedSubmission(self, *args)
