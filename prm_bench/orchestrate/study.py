"""The Optuna study behind `prm-bench tune`: the one place that talks to Optuna.

Trials are sampled with a seed derived from the number of finished trials, so a study
interrupted and resumed samples what an uninterrupted one would have. A trial left
RUNNING by a killed tune is marked failed and sampled again.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from prm_bench.config import ConfigError
from prm_bench.config.search import Dimension

_ACTIVE: set[str] = set()  # tokens of the tune calls running in this process


def import_optuna() -> Any:
    """The optuna module, quiet, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "prm-bench tune needs Optuna: pip install 'prm-bench[tune]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _trial_seed(seed: int, finished: int, position: int) -> int:
    return (seed * 1_000_003 + finished * 1_009 + position) % 2**32


def _owner(token: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def _is_stale(owner: str) -> bool:
    """Whether a RUNNING trial's owner is gone: a dead process on this host, or an ended
    tune call of this very process. Owners on other hosts are left alone."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return token not in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite(storage: str) -> None:
    """Refuse a SQLite study file that is not one (garbage), or that is empty beside the
    study record a finished tune wrote (its trials are lost: starting over silently would
    hide that).

    Raises:
        ConfigError: naming the file and what to do.
    """
    if not storage.startswith("sqlite:///"):
        return
    path = Path(storage.removeprefix("sqlite:///"))
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if not header and (path.parent / "study.json").is_file():
        raise ConfigError(
            f"{path} is empty but {path.parent / 'study.json'} records a study: its trials are "
            "lost; restore the file, or remove both to start a new study"
        )
    if header and header != SQLITE_HEADER:
        raise ConfigError(
            f"{path} is not a SQLite database (damaged?); restore it, or remove it to start "
            "a new study"
        )


class Study:
    """An Optuna study of one search space, opened (or resumed) in `storage`.

    Args:
        name: the study's name (the run's name).
        storage: an Optuna storage URL.
        identity: the metric, direction and space; a stored study made with others is
            refused, since its trials would not be comparable.
    """

    def __init__(self, name: str, storage: str, identity: dict[str, Any]) -> None:
        self.optuna = import_optuna()
        self.storage = storage
        check_sqlite(storage)
        try:
            self.study = self.optuna.create_study(
                study_name=name, storage=storage, direction=identity["direction"],
                load_if_exists=True,
            )  # fmt: skip
        except Exception as err:  # SQLAlchemy's errors: a damaged or unreachable storage
            if type(err).__module__.split(".")[0] not in ("sqlalchemy", "optuna"):
                raise
            first = str(err).splitlines()[0]
            raise ConfigError(f"the study storage {storage} cannot be opened: {first}") from None
        identity = json.loads(json.dumps(identity))
        recorded = self.study.user_attrs.get("identity")
        if recorded is None:
            self.study.set_user_attr("identity", identity)
        elif recorded != identity:
            raise ConfigError(
                f"the study {name!r} in {storage} was made with another metric, direction or "
                "search space; resume it with the same ones, or remove it (or set run.name) "
                "to start a new study"
            )
        self.token = ""

    @staticmethod
    def identity(metric: str, direction: str, space: list[Dimension]) -> dict[str, Any]:
        """What a study is made of: its metric, direction and space."""
        dims = [d.__dict__ | {"choices": list(d.choices or [])} for d in space]
        return {"metric": metric, "direction": direction, "space": dims}

    def _trials(self, state: str) -> list:
        states = (getattr(self.optuna.trial.TrialState, state),)
        return self.study.get_trials(deepcopy=False, states=states)

    @property
    def finished(self) -> int:
        """Trials that completed with a score."""
        return len(self._trials("COMPLETE"))

    @property
    def failed(self) -> int:
        """Trials that failed (not those an interrupt stopped: see `abandon`)."""
        return sum(not t.user_attrs.get("interrupted") for t in self._trials("FAIL"))

    @property
    def best(self) -> Any:
        """The best finished trial."""
        return self.study.best_trial

    def begin(self, token: str) -> None:
        """Mark this process's tune call `token` active and close, as interrupted, the
        trials that killed calls left RUNNING (they are sampled again)."""
        self.token = token
        _ACTIVE.add(token)
        stale = [t for t in self._trials("RUNNING") if _is_stale(t.user_attrs.get("owner", ""))]
        for trial in stale:  # a killed process's trials: interrupted, not failed
            self.study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            self.study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)

    def end(self) -> None:
        """This tune call is over: its RUNNING trials count as stale from now on."""
        _ACTIVE.discard(self.token)

    def ask(self, space: list[Dimension], seed: int, count: int) -> list[tuple[Any, dict]]:
        """`count` new trials and their values, each drawn by a fresh seeded sampler: what
        it draws depends only on the finished trials and the position in the batch."""
        batch = []
        done = self.finished
        for position in range(count):
            sampler = self.optuna.samplers.TPESampler(seed=_trial_seed(seed, done, position))
            self.study.sampler = sampler
            trial = self.study.ask()
            trial.set_user_attr("owner", _owner(self.token))
            batch.append((trial, {d.key: d.suggest(trial) for d in space}))
        return batch

    def tell(self, trial: Any, score: float | None, reason: str = "") -> None:
        """Record a trial's score, or its failure (None) with the reason."""
        if score is None:
            trial.set_user_attr("failure", reason)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, score)

    def abandon(self, trials: list[Any]) -> None:
        """Close the trials of an interrupted batch: Optuna has no interrupted state, so
        they are FAIL marked `interrupted`, which no count of failures includes and the
        trials table shows as INTERRUPTED (they are sampled again on resume)."""
        for trial in trials:
            trial.set_user_attr("interrupted", True)
            self.study.tell(trial.number, state=self.optuna.trial.TrialState.FAIL)

    def failure_reasons(self) -> set[str]:
        """Why the failed trials failed."""
        return {
            t.user_attrs.get("failure", "?")
            for t in self._trials("FAIL")
            if not t.user_attrs.get("interrupted")
        }

    def trials_frame(self) -> Any:
        """The trials as a pandas frame (number, value, state, params, duration); an
        interrupted trial's state reads INTERRUPTED."""
        frame = self.study.trials_dataframe(
            attrs=("number", "value", "state", "params", "duration")
        )
        stopped = {t.number for t in self._trials("FAIL") if t.user_attrs.get("interrupted")}
        if len(frame):
            frame.loc[frame["number"].isin(stopped), "state"] = "INTERRUPTED"
        return frame


def load_study(name: str, storage: str) -> Any:
    """A stored Optuna study, read back (for its figures)."""
    return import_optuna().load_study(study_name=name, storage=storage)
