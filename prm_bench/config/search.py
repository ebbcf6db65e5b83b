"""A config's `search:` section: the space `prm-bench tune` samples (docs/design.md, 3).

Each searched key is a `RangeSpec` (`low`..`high`, optionally log or stepped) or a
`ChoiceSpec` (`choices`); every bound is checked against the config model before any
trial runs, so a bad space fails with one line naming the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
)

from prm_bench.config.models import ConfigError, ExperimentConfig
from prm_bench.config.overrides import apply_overrides, get_path

# what a trial is scored by must not move
FIXED_SECTIONS = {"data", "eval"}
_Number = StrictInt | StrictFloat


class RangeSpec(BaseModel):
    """A numeric range: `low`..`high`, on a log scale or in steps of `step`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: _Number
    high: _Number
    log: StrictBool = False
    step: _Number | None = None


class ChoiceSpec(BaseModel):
    """A list of values to choose from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: list[Any] = Field(min_length=1)


@dataclass(frozen=True)
class Dimension:
    """One searched key: a numeric range (`low`..`high`, optionally log or stepped) or
    a list of `choices`."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple | None = None

    def suggest(self, trial: Any) -> Any:
        """The trial's value of this key (an Optuna `Trial`)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            low, high, step = int(self.low), int(self.high), int(self.step or 1)
            return trial.suggest_int(self.key, low, high, step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> str:
        """The searched values, as the report shows them."""
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        scale = ", log" if self.log else (f", step {self.step:g}" if self.step else "")
        return f"[{self.low:g}, {self.high:g}{scale}]"


def with_values(config: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """`config` with `values` ({section.key: value}) set and validated.

    Raises:
        ValidationError: a value the key does not take.
    """
    return ExperimentConfig.model_validate(apply_overrides(config.model_dump(mode="json"), values))


def parse_space(search: dict[str, Any], base: ExperimentConfig, where: str) -> list[Dimension]:
    """The search space of a config's `search:` section, every bound checked against
    the config model before any trial runs.

    Raises:
        ConfigError: one line naming the key, the bad value and what is expected.
    """
    if not search:
        raise ConfigError(
            f"{where}: the config has no search section; add one, e.g. "
            "search: {retrieval.alpha: {low: 0.1, high: 2.0, log: true}}"
        )
    tree = base.model_dump(mode="json")
    space = []
    for key, spec in search.items():
        name = f"{where}: search.{key}"
        section = str(key).split(".")[0]
        if "." not in str(key):
            raise ConfigError(f"{name}: a searched key is section.key (e.g. retrieval.alpha)")
        if section == "run":
            raise ConfigError(
                f"{name}: run settings (device, jobs, threads) apply to the whole run and "
                "change no result; search train, infer, retrieval, proposals or method keys"
            )
        try:
            current = get_path(tree, key)
        except KeyError:
            raise ConfigError(f"{name}: unknown key (no such key in the config)") from None
        if section in FIXED_SECTIONS:
            raise ConfigError(
                f"{name}: the {section} section cannot be searched (it decides what a trial "
                "is scored on); search train, infer, retrieval, proposals or method keys"
            )
        space.append(_dimension(name, key, _spec(name, spec), current, base))
    return space


def _spec(name: str, spec: Any) -> RangeSpec | ChoiceSpec:
    if not isinstance(spec, dict) or not spec or set(spec) - {"low", "high", "log", "step",
                                                               "choices"}:  # fmt: skip
        raise ConfigError(
            f"{name}: expected a mapping with low and high (optional log, step) or with "
            f"choices, got {spec!r}"
        )
    if "choices" in spec:
        try:
            return ChoiceSpec.model_validate(spec)
        except ValidationError:
            raise ConfigError(
                f"{name}: choices must be a non-empty list, alone, got {spec!r}"
            ) from None
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{name}: a range needs both low and high, got {spec!r}")
    try:
        return RangeSpec.model_validate(spec)
    except ValidationError as err:
        field = str(err.errors()[0]["loc"][0])
        expected = "true or false" if field == "log" else "a number"
        raise ConfigError(f"{name}.{field} must be {expected}, got {spec[field]!r}") from None


def _dimension(
    name: str, key: str, spec: RangeSpec | ChoiceSpec, current: Any, base: ExperimentConfig
) -> Dimension:
    if isinstance(spec, ChoiceSpec):
        for choice in spec.choices:
            _check_value(name, key, choice, base)
        return Dimension(key, choices=tuple(spec.choices))
    low, high, log, step = spec.low, spec.high, spec.log, spec.step
    if low > high:
        raise ConfigError(f"{name}: low {low!r} is above high {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{name}: a log range needs low > 0, got {low!r}")
    if log and step is not None:
        raise ConfigError(f"{name}: give log or step, not both")
    if step is not None and step <= 0:
        raise ConfigError(f"{name}.step must be > 0, got {step!r}")
    numeric = isinstance(current, (int, float)) and not isinstance(current, bool)
    if not numeric and current is not None:
        raise ConfigError(
            f"{name}: {key} is not a number (it holds {json.dumps(current)}); search it "
            "with choices"
        )
    integer = isinstance(current, int) and not isinstance(current, bool)
    if integer and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ConfigError(f"{name}: {key} takes integers, got low {low!r}, high {high!r}")
    for value in (low, high):
        _check_value(name, key, value, base)
    return Dimension(key, float(low), float(high), log, step, integer)


def _check_value(name: str, key: str, value: Any, base: ExperimentConfig) -> None:
    try:
        with_values(base, {key: value})
    except ValidationError as err:
        problem = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {key} does not take {value!r} ({problem})") from None
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
