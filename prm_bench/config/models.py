"""The validated config sections of an experiment (docs/design.md, section 6).

Registry choices are `name` fields of their section (`data.name`, `backbone.name`,
`stimulation.name`, `proposals.gallery`, `retrieval.terms`, `method.name`), validated
against the registries with a close-match suggestion, so a grid axis over
`backbone.name` reads the same as `--set backbone.name=resnet50`.

Naming: every section is a frozen pydantic `*Config`; `RetrievalConfig` and
`BaselineConfig` live beside the math they configure. A `*Spec` is a frozen dataclass
that describes a thing rather than configures a run (`BackboneSpec`, `ShapesSpec`).
`ExperimentConfig` is one cell; `RunSettings` (device, jobs, threads, executor) belongs
to the whole run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from prm_bench.data import DATASETS
from prm_bench.errors import ConfigError  # noqa: F401 - re-exported: config.ConfigError
from prm_bench.instances.baselines import BaselineConfig
from prm_bench.instances.methods import METHODS
from prm_bench.instances.proposals import GALLERIES
from prm_bench.instances.retrieval_options import RetrievalConfig
from prm_bench.metrics import METRICS
from prm_bench.model.catalogue import BACKBONES, STIMULATIONS
from prm_bench.registry import Registry, keyword_options


def _registered_in(registry: Registry, exempt: Callable[[str], bool] | None = None) -> Any:
    """A str field whose value must be a name of `registry` (unless `exempt(value)`);
    an unknown name fails validation with the registry's close-match message. A declared
    name is valid without building its entry (which would import torch)."""

    def check(value: str) -> str:
        if (exempt is None or not exempt(value)) and value not in registry.declared():
            registry.get(value)
        return value

    return Annotated[str, AfterValidator(check)]


class _Section(BaseModel):
    # NaN and infinity are refused in every float field: they change results silently
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Which dataset, where, and which splits (training never sees the evaluation split)."""

    name: _registered_in(DATASETS) = "shapes"
    root: Path = Path("data/shapes")
    train_split: str = "train"
    eval_split: str = "val"
    image_size: int | None = Field(None, ge=16)
    limit_train: int | None = Field(None, ge=1)
    limit_eval: int | None = Field(None, ge=1)
    # generated kinds (shapes): make the dataset at root when it is absent; off, a missing
    # root is an error, so a typo in root does not silently generate a new dataset. Read
    # kinds (voc, coco) are never made: for them it has no effect (their layout is checked)
    generate: bool = False
    # the held-out split that `prm-bench tune` scores trials on (never the eval split);
    # evaluate_on: tune makes a cell infer, retrieve and evaluate on it instead of eval
    tune_split: str | None = None
    limit_tune: int | None = Field(None, ge=1)
    evaluate_on: Literal["eval", "tune"] = "eval"
    # the reproduction-gap study's leak: `train-on-eval` trains on the evaluation images
    # too (as the released config does on VOC); never a default, marked in every report
    leak: Literal["none", "train-on-eval"] = "none"

    @model_validator(mode="after")
    def _tune_split_apart(self) -> DataConfig:
        if self.tune_split is not None and self.tune_split in (self.eval_split, self.train_split):
            raise ValueError(
                f"tune_split {self.tune_split!r} must differ from train_split and eval_split: "
                "parameters tuned on the evaluation split overstate the result"
            )
        if self.evaluate_on == "tune" and self.tune_split is None:
            raise ValueError("evaluate_on is 'tune' but no tune_split is set")
        return self

    @property
    def leaks(self) -> bool:
        """Whether training also sees the evaluation images (`leak: train-on-eval`)."""
        return self.leak == "train-on-eval"

    @property
    def evaluated(self) -> tuple[str, int | None]:
        """The split this cell infers, retrieves and evaluates on, and its image limit."""
        if self.evaluate_on == "tune":
            return self.tune_split, self.limit_tune
        return self.eval_split, self.limit_eval


class BackboneConfig(_Section):
    """The fully convolutional classifier's trunk (DESIGN 2.1)."""

    # timm:<name> entries are checked when the model is built (that needs the model)
    name: _registered_in(BACKBONES, lambda v: v.startswith("timm:")) = "resnet10t"
    pretrained: bool = False
    weights: Path | None = None
    output_stride: int | None = None


class StimulationConfig(_Section):
    """The aggregation used in training, with its keyword options."""

    name: _registered_in(STIMULATIONS) = "peak"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_options(self) -> StimulationConfig:
        if not self.options:  # the defaults: nothing to check, no torch to import
            return self
        function = STIMULATIONS.get(self.name)
        allowed = list(keyword_options(function))
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(
                f"stimulation {self.name!r} has no option {', '.join(unknown)} "
                f"(options: {', '.join(allowed) or 'none'})"
            )
        problem = _trial_stimulation(function, json.dumps(self.options, sort_keys=True))
        if problem:
            raise ValueError(f"stimulation {self.name!r} options {self.options}: {problem}")
        return self


@functools.lru_cache(maxsize=256)
def _trial_stimulation(function: Callable[..., Any], options: str) -> str:
    """Why `function` refuses the (JSON) options on a tiny map, or ""; once per function
    and options (a 10,000-cell grid validates the same few)."""
    import torch  # options are tried on a tensor: a config with none never loads torch

    try:  # the values too, so a bad one fails before any compute
        function(torch.zeros(1, 1, 4, 4), **json.loads(options))
    except (TypeError, ValueError, RuntimeError) as err:
        return str(err)
    return ""


class TrainConfig(_Section):
    """Training recipe; the original demo's is SGD, lr 0.01 head / 1e-4 backbone."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    backbone_lr: float | None = Field(None, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    flip: bool = True
    seed: int = Field(0, ge=0, lt=2**63)  # torch's manual_seed takes 64 bits
    # bf16 autocast in training, the same on every device (the CPU too): off by default,
    # keyed, refused before any compute on a device without bf16 (preflight)
    amp: bool = False
    # channels-last memory for the training convolutions: 20-30% faster on CPU; it
    # changes the order of float sums, so it is part of the training key
    channels_last: bool = True
    # processes decoding the next batches while one trains (0: decoded in the training
    # process); speed only: not part of the training key
    loader_workers: int = Field(0, ge=0)
    # where each epoch's scalars go besides events.jsonl (`tensorboard`: the extra
    # `pip install 'prm-bench[tensorboard]'`); not part of the training key
    log_to: list[Literal["tensorboard"]] = Field(default_factory=list)


class InferConfig(_Section):
    """Peak finding and peak backpropagation at inference (DESIGN 2.2, 2.4)."""

    win_size: int = Field(3, ge=1)
    peak_filter: Literal["median", "mean", "max", "none"] | float = "median"
    upsample: int = Field(1, ge=1)
    class_threshold: float = 0.0
    peak_threshold: float = 0.0
    # absolute: a response value (the original: 30); relative: a share of each map's max
    peak_threshold_mode: Literal["absolute", "relative"] = "absolute"
    max_peaks: int = Field(20, ge=1)
    # how PRMs are computed (speed only, equal results; not keyed): `batched` carries
    # chunk_size signals per backward (default: 1 on CPU, 32 on GPU), `sequential` one
    strategy: Literal["batched", "sequential"] = "batched"
    chunk_size: int | None = Field(None, ge=1)
    # a working-memory budget (MiB) per image's PRM pass: the chunk shrinks to fit it
    max_memory_mb: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _odd_window(self) -> InferConfig:
        if self.win_size % 2 == 0:
            raise ValueError(
                f"win_size must be odd (a window centred on its peak), got {self.win_size}"
            )
        return self


class ProposalsConfig(_Section):
    """The proposal gallery and, for file galleries, where its files are."""

    gallery: _registered_in(GALLERIES) = "embedded"
    root: Path | None = None


class MethodConfig(_Section):
    """An instance method: `prm` (peak response maps + retrieval) or a CAM baseline of
    DESIGN 2.6 (`prm-bench list methods`)."""

    name: _registered_in(METHODS) = "prm"
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)


class EvalConfig(_Section):
    """Metrics and their parameters (DESIGN 3)."""

    metrics: list[_registered_in(METRICS)] = Field(
        default_factory=lambda: ["voc-map", "abo", "pointing", "prm-quality", "semantic"]
    )
    iou_thresholds: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75], min_length=1
    )
    use_07_metric: bool = False
    # pointing: `tolerance` px at the scale of `tolerance_reference` px on the image's long
    # side (VOC: 18 px on ~500 px images), scaled per image; null keeps plain pixels
    tolerance: float = Field(18.0, ge=0)
    tolerance_reference: float | None = Field(500.0, gt=0)
    prm_threshold: float = Field(0.5, ge=0, le=1)


class RunSettings(_Section):
    """Where and how the whole run executes (the `run:` section, `Plan.run`): the same for
    every cell, so it is no grid or search axis and no part of any stage key."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    jobs: int = Field(1, ge=1)
    # CPU threads of every task, whatever --jobs is: results depend on the thread count
    # (the order of float reductions), so it is fixed and recorded with every stage
    threads: int = Field(2, ge=1)
    executor: Literal["local", "dask", "slurm"] = "local"
    scheduler: str | None = None  # the dask scheduler's address


class ExperimentConfig(_Section):
    """One cell of a grid: everything the stages of one result depend on."""

    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    stimulation: StimulationConfig = Field(default_factory=StimulationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    proposals: ProposalsConfig = Field(default_factory=ProposalsConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
