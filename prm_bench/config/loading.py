"""Config files to plans: YAML with `extends:`, `a.b=c` overrides and `grid:` expansion
(docs/design.md, section 6). Every cell is validated before anything runs.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from prm_bench.config.files import read_yaml
from prm_bench.config.gap import GapStudy
from prm_bench.config.models import ConfigError, ExperimentConfig, RunSettings
from prm_bench.config.overrides import (
    apply_overrides,
    from_working_directory,
    parse_override,
    variant_name,
)
from prm_bench.config.plan import Cell, Plan

_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


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


def _validation_message(
    where: str, err: ValidationError, model: type[BaseModel], overrides: Iterable[str] = ()
) -> str:
    """One line per problem: the file (or the `--set` item that gave the key), the key
    path, what is wrong and, for an unknown key, the closest known key and all of them.

    Args:
        where: the config file's name (and cell), for keys the file gave.
        err: pydantic's error.
        model: the model validated (`ExperimentConfig`, or `RunSettings` for `run.`).
        overrides: the `--set` items applied; a key one of them gave is blamed on it.
    """
    prefix = "run" if model is RunSettings else ""
    given = {".".join(parse_override(item)[0]): item for item in overrides}
    lines = []
    for problem in err.errors():
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in problem["loc"]])
        value = problem.get("input")
        shown = f" (got {value!r})" if not isinstance(value, dict) and value is not None else ""
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message, shown = _unknown_key(model, [str(p) for p in problem["loc"]]), ""
        blamed = next(  # the --set gave the key, a section holding it, or an item in it
            (f"--set {item}" for key, item in given.items() if _nested(key, path)), where
        )
        lines.append(f"{blamed}: {path}: {message}{shown}")
    return "\n".join(lines)


def _nested(key: str, path: str) -> bool:
    """Whether one dotted path lies within the other (`eval.metrics` and `eval.metrics.0`,
    `stimulation` and `stimulation.options`)."""
    return f"{key}.".startswith(f"{path}.") or f"{path}.".startswith(f"{key}.")


def _unknown_key(model: type[BaseModel], location: list[str]) -> str:
    """`unknown key`, with the closest known key of its section and all of them."""
    for part in location[:-1]:
        field = model.model_fields.get(part)
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return "unknown key"
        model = inner
    known = list(model.model_fields)
    close = difflib.get_close_matches(location[-1], known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}(keys here: {', '.join(known)})"


def load_plan(
    source: str | Path | dict[str, Any] | None,
    overrides: list[str] | tuple[str, ...] = (),
    use_grid: bool = True,
) -> Plan:
    """Read a config (file or dict), apply overrides, expand its grid and validate every
    cell before anything runs. `grid` is one map of axes or a list of them (an ablation
    study: each sub-grid varies some axes around the base; identical cells are merged).
    With `use_grid=False` the plan is the base config alone (one cell). A `search:`
    section (`prm-bench tune`) is kept on the plan as written; the `run:` section becomes
    the plan's `run` settings.

    Raises:
        ConfigError: naming the file, the key path, the bad value and what is allowed.
    """
    path = Path(source) if isinstance(source, (str, Path)) else None
    tree = read_yaml(path) if path else copy.deepcopy(source or {})
    where = str(path) if path else "config"
    overrides = [from_working_directory(item) for item in overrides]
    _refuse_a_leak_from_the_command_line(overrides)
    tree = apply_overrides(tree, overrides)
    grid = tree.pop("grid", None) or {}
    search = tree.pop("search", None) or {}
    if not isinstance(search, dict):
        raise ConfigError(f"{where}: search must map section.key names to ranges or choices")
    gap = tree.pop("gap", None)
    run = _run_settings(tree.pop("run", None) or {}, where, overrides)
    names, assignments = _expand(grid if use_grid else {}, where)
    _refuse_overridden_axes(overrides, assignments, where)
    source = _Source(where, path.parent if path else Path.cwd(), tuple(overrides))
    cells = [
        Cell(index=index, axes=axes, config=_cell_config(tree, axes, settings, source))
        for index, (axes, settings) in enumerate(assignments)
    ]
    name = run.name or variant_name(path.stem if path else "run", overrides)
    if not _RUN_NAME.fullmatch(name) or set(name) == {"."} or len(name) > 200:
        raise ConfigError(
            f"{where}: the run name {name[:60]!r}{'...' if len(name) > 60 else ''} (from the "
            "file name or run.name) must start with a letter or digit, hold only letters, "
            "digits, '_', '.', '+' and '-', and be at most 200 characters"
        )
    return Plan(
        source=path, name=name, axes=names, cells=cells, run=run, search=search,
        overrides=list(overrides), gap=_gap_study(gap, cells, where),
    )  # fmt: skip


def _gap_study(tree: Any, cells: list[Cell], where: str) -> GapStudy | None:
    """The `gap:` section, checked against the grid: every variant it names is one."""
    if tree is None:
        return None
    try:
        study = GapStudy.model_validate(tree)
    except ValidationError as err:
        problem = err.errors()[0]
        key = ".".join(str(p) for p in problem["loc"])
        raise ConfigError(f"{where}: gap.{key}: {problem['msg']}") from None
    offered = {cell.axes.get("variant") for cell in cells} - {None}
    missing = sorted(study.variants() - offered)
    if missing:
        raise ConfigError(
            f"{where}: gap names the variants {', '.join(missing)}, which grid.variants "
            f"does not have (it has: {', '.join(sorted(offered)) or 'none'})"
        )
    return study


def _refuse_a_leak_from_the_command_line(overrides: Any) -> None:
    """`data.leak` trains on the evaluation images: it is measured only where a config
    file spells it out (the gap study), never switched on by a `--set`."""
    for item in overrides:
        if ".".join(parse_override(item)[0]) == "data.leak":
            raise ConfigError(
                f"--set {item}: data.leak trains on the evaluation images and is refused "
                "on the command line; spell it out in a config file (see ablations/gap.yaml)"
            )


def _refuse_overridden_axes(overrides: Any, assignments: list, where: str) -> None:
    """An override of a key the grid sets in its cells would be replaced by the grid's
    values in every cell, silently: refuse it."""
    axes = {key for _, settings in assignments for key in settings}
    for item in overrides:
        key = ".".join(parse_override(item)[0])
        if key in axes:
            raise ConfigError(
                f"--set {item}: {key} is a grid axis of {where} (its cells set it, so the "
                "override would be dropped); change the grid, or add --set 'grid={}' to "
                "run the base config alone"
            )


def _run_settings(section: Any, where: str, overrides: Iterable[str] = ()) -> RunSettings:
    try:
        return RunSettings.model_validate(section)
    except ValidationError as err:
        raise ConfigError(_validation_message(where, err, RunSettings, overrides)) from None


def _expand(grid: Any, where: str) -> tuple[list[str], list[tuple[dict, dict]]]:
    """Axis names and, per unique cell, (its axis values, the settings it applies)."""
    groups = grid if isinstance(grid, list) else [grid]
    if not all(isinstance(g, dict) for g in groups):
        raise ConfigError(
            f"{where}: grid must map axes (section.key) to lists, or be a list of such maps"
        )
    names: list[str] = []
    assignments: list[dict[str, Any]] = []
    seen: set[str] = set()  # identical cells merge; a set keeps 10k-cell grids linear
    for group in groups:
        group_names, group_cells = _grid_assignments(group, where)
        names += [n for n in group_names if n not in names]
        for assignment in group_cells:
            marker = json.dumps(assignment, sort_keys=True, default=str)
            if marker not in seen:
                seen.add(marker)
                assignments.append(assignment)
    cells = []
    for assignment in assignments:
        settings = {**assignment.pop(_SETTINGS, {}), **assignment}
        settings.pop("variant", None)
        for key in settings:
            _check_axis(key, where)
        cells.append((assignment, settings))
    return names, cells


def _check_axis(key: str, where: str) -> None:
    if "." not in key:
        raise ConfigError(f"{where}: grid axis {key!r} must be section.key (e.g. backbone.name)")
    if key.split(".")[0] == "run":
        raise ConfigError(
            f"{where}: grid axis {key!r}: run settings (device, jobs, threads, executor) apply "
            "to the whole run, not to a cell; set them once under run: or with --set"
        )


@dataclass(frozen=True)
class _Source:
    """Where a config came from: its name for errors, the folder its relative paths are
    relative to, and the `--set` items applied (a key one gave is blamed on it)."""

    where: str
    base: Path
    overrides: tuple[str, ...] = ()


def _cell_config(
    tree: dict[str, Any], axes: dict[str, Any], settings: dict[str, Any], source: _Source
) -> ExperimentConfig:
    """The validated config of one cell, its relative paths resolved against the
    source's folder; errors name the cell's axes."""
    where, base, overrides = source.where, source.base, source.overrides
    try:
        config = ExperimentConfig.model_validate(apply_overrides(tree, settings))
    except ValidationError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in axes.items())
        raise ConfigError(
            _validation_message(
                f"{where}" + (f" [cell {shown}]" if shown else ""), err, ExperimentConfig, overrides
            )
        ) from None
    return _resolve_paths(config, base)


_SPLITS = ("train_split", "eval_split", "tune_split")


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Relative paths of a config file are relative to the file: the data root, split
    list files, weights and the proposal folder."""

    def resolve(value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else (base / value).resolve()

    def resolve_split(split: str | None) -> str | None:
        """A split given as a list file (a .txt or a path) is a path; a name is a name."""
        if split is None or not (split.endswith(".txt") or "/" in split):
            return split
        return str(resolve(Path(split)))

    splits = {k: resolve_split(getattr(config.data, k)) for k in _SPLITS}
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"root": resolve(config.data.root), **splits}),
            "backbone": config.backbone.model_copy(
                update={"weights": resolve(config.backbone.weights)}
            ),
            "proposals": config.proposals.model_copy(
                update={"root": resolve(config.proposals.root)}
            ),
        }
    )
