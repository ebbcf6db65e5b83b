"""Experiment configuration: pydantic models, YAML files with `extends:`, `a.b=c`
overrides and `grid:` expansion (DESIGN 6).

Registry choices are `name` fields of their section (`data.name`, `backbone.name`,
`stimulation.name`, `proposals.gallery`, `retrieval.terms`, `method.name`), validated
against the registries with a close-match suggestion, so a grid axis over
`backbone.name` reads the same as `--set backbone.name=resnet50`.

Naming: every section is a frozen pydantic `*Config`; `RetrievalConfig` and
`BaselineConfig` live beside the math they configure. A `*Spec` is a frozen dataclass
that describes a thing rather than configures a run (`BackboneSpec`, `ShapesSpec`).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from prm_bench.backbones import BACKBONES
from prm_bench.baselines import BaselineConfig
from prm_bench.data import DATASETS
from prm_bench.methods import METHODS
from prm_bench.metrics import METRICS
from prm_bench.peaks import STIMULATIONS
from prm_bench.proposals import GALLERIES
from prm_bench.registry import Registry
from prm_bench.retrieval import RetrievalConfig


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key path."""


def _registered_in(registry: Registry, exempt: Callable[[str], bool] | None = None) -> Any:
    """A str field whose value must be a name of `registry` (unless `exempt(value)`);
    an unknown name fails validation with the registry's close-match message."""

    def check(value: str) -> str:
        if exempt is None or not exempt(value):
            registry.get(value)
        return value

    return Annotated[str, AfterValidator(check)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    # root is an error, so a typo in root does not silently generate a new dataset
    generate: bool = False
    # the held-out split that `prm-bench tune` scores trials on (never the eval split);
    # evaluate_on: tune makes a cell infer, retrieve and evaluate on it instead of eval
    tune_split: str | None = None
    limit_tune: int | None = Field(None, ge=1)
    evaluate_on: Literal["eval", "tune"] = "eval"

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

    name: str = "peak"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_options(self) -> StimulationConfig:
        function = STIMULATIONS.get(self.name)
        allowed = [
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(
                f"stimulation {self.name!r} has no option {', '.join(unknown)} "
                f"(options: {', '.join(allowed) or 'none'})"
            )
        try:  # the values too, on a tiny map, so a bad one fails before any compute
            function(torch.zeros(1, 1, 4, 4), **self.options)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"stimulation {self.name!r} options {self.options}: {err}") from None
        return self


class TrainConfig(_Section):
    """Training recipe; the original demo's is SGD, lr 0.01 head / 1e-4 backbone."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    backbone_lr: float | None = Field(None, gt=0)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    flip: bool = True
    seed: int = 0
    amp: bool = True
    # channels-last memory for the training convolutions: 20-30% faster on CPU; it
    # changes the order of float sums, so it is part of the training key
    channels_last: bool = True
    # processes decoding the next batches while one trains (0: decoded in the training
    # process); speed only: not part of the training key
    loader_workers: int = Field(0, ge=0)


class InferConfig(_Section):
    """Peak finding and peak backpropagation at inference (DESIGN 2.2, 2.4)."""

    win_size: int = 3
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


class RunConfig(_Section):
    """Where and how the grid runs."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    jobs: int = Field(1, ge=1)
    # CPU threads of every task, whatever --jobs is: results depend on the thread count
    # (the order of float reductions), so it is fixed and recorded with every stage
    threads: int = Field(2, ge=1)


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
    run: RunConfig = Field(default_factory=RunConfig)


def config_hash(*parts: BaseModel | dict | str) -> str:
    """Stable short hash of config pieces (their JSON), the key of a stage."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- files, overrides and grids --------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (last-wins hides a mistake)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


def _read_yaml(
    path: Path, seen: tuple[Path, ...] = (), referrer: Path | None = None
) -> dict[str, Any]:
    """A YAML file as a dict, with `extends:` (a path relative to the file) merged under it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: `extends` forms a cycle ({' -> '.join(str(p) for p in seen)})")
    if not path.is_file():
        via = f" (the `extends` of {referrer})" if referrer else ""
        raise ConfigError(f"config file {path}{via} does not exist")
    try:
        content = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    parent = content.pop("extends", None)
    if parent is None:
        return content
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends must be the path of one config file, got {parent!r}")
    base = _read_yaml(path.parent / parent, (*seen, path), referrer=path)
    if "grid" in content:
        base.pop("grid", None)  # a child's grid replaces its parent's, axes are not mixed
    return _merge(base, content)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], c) with c read as YAML (numbers, lists, null, true...)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, _, raw = item.partition("=")
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML: {err}") from err
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    return path, value


def set_path(tree: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of `tree` with `value` at the key `path`."""
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {key} is not a section")
    node[path[-1]] = value
    return tree


class Cell(BaseModel):
    """One expanded grid cell: its axis values and its validated config."""

    model_config = ConfigDict(frozen=True)

    index: int
    axes: dict[str, Any]
    config: ExperimentConfig


class Plan(BaseModel):
    """A loaded config file: the run's name and its cells."""

    source: Path | None
    name: str
    axes: list[str]
    cells: list[Cell]
    search: dict[str, Any] = Field(default_factory=dict)  # `prm-bench tune`'s space
    overrides: list[str] = Field(default_factory=list)  # the `a.b=c` items applied


_SETTINGS = "__settings__"  # a variant's settings: applied to the cell, not an axis


def _grid_assignments(grid: dict[str, Any], where: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Axis names and one {axis: value} per cell: the product of the axes, where a
    `zip:` entry moves several axes together and a `variants:` entry names whole sets of
    settings."""
    factors: list[list[dict[str, Any]]] = []
    names: list[str] = []
    for key, values in grid.items():
        if key == "zip":
            lists = isinstance(values, dict) and all(
                isinstance(v, list) and v for v in values.values()
            )
            if not lists or len({len(v) for v in values.values()}) != 1:
                raise ConfigError(
                    f"{where}: grid.zip maps section.key names to non-empty lists of equal "
                    f"length, got {values!r}"
                )
            names += list(values)
            factors.append(
                [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
            )
        elif key == "variants":
            if not isinstance(values, dict) or not values:
                raise ConfigError(f"{where}: grid.variants maps a variant name to settings")
            bad = [n for n, v in values.items() if v is not None and not isinstance(v, dict)]
            if bad:
                raise ConfigError(
                    f"{where}: grid.variants.{bad[0]} must map section.key names to values, "
                    f"got {values[bad[0]]!r}"
                )
            names.append("variant")
            factors.append([{"variant": name, _SETTINGS: s or {}} for name, s in values.items()])
        else:
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: grid.{key} must be a non-empty list of values")
            names.append(key)
            factors.append([{key: v} for v in values])
    cells = [
        {k: v for part in combo for k, v in part.items()} for combo in itertools.product(*factors)
    ]
    return names, cells or [{}]


def _validation_message(where: str, err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        path = ".".join(str(p) for p in problem["loc"])
        value = problem.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict) and value is not None else ""
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{where}: {path}: {message}{shown}")
    return "\n".join(lines)


def load_plan(
    source: str | Path | dict[str, Any] | None,
    overrides: list[str] | tuple[str, ...] = (),
    use_grid: bool = True,
) -> Plan:
    """Read a config (file or dict), apply overrides, expand its grid and validate every
    cell before anything runs. `grid` is one map of axes or a list of them (an ablation
    study: each sub-grid varies some axes around the base; identical cells are merged).
    With `use_grid=False` the plan is the base config alone (one cell). A `search:`
    section (`prm-bench tune`) is kept on the plan as written.

    Raises:
        ConfigError: naming the file, the key path, the bad value and what is allowed.
    """
    path = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        tree = _read_yaml(path)
    else:
        tree = copy.deepcopy(source or {})
    where = str(path) if path else "config"
    for item in overrides:
        key, value = parse_override(item)
        tree = set_path(tree, key, value)
    grid = tree.pop("grid", None) or {}
    search = tree.pop("search", None) or {}
    if not isinstance(search, dict):
        raise ConfigError(f"{where}: search must map section.key names to ranges or choices")
    if not use_grid:
        grid = {}
    groups = grid if isinstance(grid, list) else [grid]
    if not all(isinstance(g, dict) for g in groups):
        raise ConfigError(
            f"{where}: grid must map axes (section.key) to lists, or be a list of such maps"
        )
    names: list[str] = []
    assignments: list[dict[str, Any]] = []
    for group in groups:
        group_names, group_cells = _grid_assignments(group, where)
        names += [n for n in group_names if n not in names]
        assignments += [a for a in group_cells if a not in assignments]
    base_dir = path.parent if path else Path.cwd()
    cells = []
    for index, assignment in enumerate(assignments):
        cell_tree = tree
        settings = {**assignment.pop(_SETTINGS, {}), **assignment}
        for key, value in settings.items():
            if key == "variant":
                continue
            if "." not in key:
                raise ConfigError(
                    f"{where}: grid axis {key!r} must be section.key (e.g. backbone.name)"
                )
            cell_tree = set_path(cell_tree, key.split("."), value)
        try:
            config = ExperimentConfig.model_validate(cell_tree)
        except ValidationError as err:
            axes = ", ".join(f"{k}={v!r}" for k, v in assignment.items())
            raise ConfigError(
                _validation_message(f"{where}" + (f" [cell {axes}]" if axes else ""), err)
            ) from None
        config = _resolve_paths(config, base_dir)
        cells.append(Cell(index=index, axes=assignment, config=config))
    name = cells[0].config.run.name or (path.stem if path else "run")
    if not _RUN_NAME.fullmatch(name) or set(name) == {"."}:
        raise ConfigError(
            f"{where}: the run name {name!r} (from the file name or run.name) must start with "
            "a letter or digit and hold only letters, digits, '_', '.' and '-'"
        )
    return Plan(
        source=path,
        name=name,
        axes=names,
        cells=cells,
        search=search,
        overrides=list(overrides),
    )


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Relative paths of a config file are relative to the file."""

    def resolve(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else (base / value).resolve()

    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"root": resolve(config.data.root)}),
            "backbone": config.backbone.model_copy(
                update={"weights": resolve(config.backbone.weights)}
            ),
            "proposals": config.proposals.model_copy(
                update={"root": resolve(config.proposals.root)}
            ),
        }
    )
