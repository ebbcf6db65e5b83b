"""Experiment configuration: validated sections (`models`), stage keys (`keys`), plans of
cells (`plan`), YAML files with overrides and grids (`loading`) and search spaces
(`search`). docs/design.md, section 6."""

from prm_bench.config.keys import STAGES, config_hash, stage_keys
from prm_bench.config.loading import load_plan
from prm_bench.config.models import (
    BackboneConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    InferConfig,
    MethodConfig,
    ProposalsConfig,
    RunSettings,
    StimulationConfig,
    TrainConfig,
)
from prm_bench.config.overrides import apply_overrides, get_path, parse_override, set_path
from prm_bench.config.plan import Cell, Plan

__all__ = [
    "STAGES",
    "BackboneConfig",
    "Cell",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "InferConfig",
    "MethodConfig",
    "Plan",
    "ProposalsConfig",
    "RunSettings",
    "StimulationConfig",
    "TrainConfig",
    "apply_overrides",
    "config_hash",
    "get_path",
    "load_plan",
    "parse_override",
    "set_path",
    "stage_keys",
]
