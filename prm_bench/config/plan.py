"""A loaded config: its cells, each with its stage keys, and the run's own settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prm_bench.config.gap import GapStudy
from prm_bench.config.keys import stage_keys
from prm_bench.config.models import ExperimentConfig, RunSettings


class Cell(BaseModel):
    """One expanded grid cell: its axis values, its validated config and the key of each
    of its stages (computed from the config when not given, e.g. read from a manifest)."""

    model_config = ConfigDict(frozen=True)

    index: int
    axes: dict[str, Any]
    config: ExperimentConfig
    keys: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _with_keys(self) -> Cell:
        if not self.keys:
            object.__setattr__(self, "keys", stage_keys(self.config))
        return self


class Plan(BaseModel):
    """A loaded config file: the run's name, its settings and its cells."""

    source: Path | None
    name: str
    axes: list[str]
    cells: list[Cell]
    run: RunSettings = Field(default_factory=RunSettings)
    search: dict[str, Any] = Field(default_factory=dict)  # `prm-bench tune`'s space
    gap: GapStudy | None = None  # the reproduction-gap study's rows (`gap:`)
    overrides: list[str] = Field(default_factory=list)  # the `a.b=c` items applied
    # the cells' keys name the content of the data they read (`orchestrate.preflight`)
    data_bound: bool = False

    def with_run(self, **settings: Any) -> Plan:
        """This plan with some run settings replaced (the CLI's --device, --jobs, ...);
        None values leave a setting as it is."""
        given = {k: v for k, v in settings.items() if v is not None}
        run = RunSettings.model_validate({**self.run.model_dump(), **given})
        return self.model_copy(update={"run": run})
