"""`section.key=value` overrides: parsing them, applying them to a config tree, where a
command-line path is relative to, and the run name of a variant with overrides."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from prm_bench.errors import ConfigError
from prm_bench.hashing import json_digest

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


_PATH_KEYS = {"data.root", "backbone.weights", "proposals.root"}
_SPLIT_KEYS = {f"data.{k}" for k in ("train_split", "eval_split", "tune_split")}


def from_working_directory(item: str) -> str:
    """A path given on the command line is relative to the working directory (a path in
    a config file stays relative to the file): `--set data.root=s` means `./s`."""
    path, value = parse_override(item)
    key = ".".join(path)
    is_path = key in _PATH_KEYS or (
        key in _SPLIT_KEYS and isinstance(value, str) and (value.endswith(".txt") or "/" in value)
    )
    if not is_path or not isinstance(value, str) or not value or Path(value).is_absolute():
        return item
    return f"{key}={Path(value).resolve()}"


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


def get_path(tree: dict[str, Any], key: str) -> Any:
    """The value at the dotted `key` of `tree`.

    Raises:
        KeyError: `key`, when a part of it is missing.
    """
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def apply_overrides(
    tree: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str]
) -> dict[str, Any]:
    """A copy of `tree` with every override set: `a.b=c` strings (from the command line),
    or a mapping of dotted keys to values (grid cells, trials, the tuned values)."""
    pairs = (
        [(key.split("."), value) for key, value in overrides.items()]
        if isinstance(overrides, Mapping)
        else [parse_override(item) for item in overrides]
    )
    for path, value in pairs:
        tree = set_path(tree, path, value)
    return tree


def variant_name(stem: str, overrides: list[str]) -> str:
    """The run name of a config with `--set` overrides: the stem, then the overrides
    (`quick+train.epochs-5`), so a variant never replaces the plain run's results; run
    settings (device, jobs, ...) change no result and name nothing. Too long a name
    ends in a digest of the overrides."""
    named = [item for item in overrides if not item.strip().startswith("run.")]
    if not named:
        return stem
    words = [re.sub(r"[^A-Za-z0-9_.-]+", "-", item.strip()).strip("-") for item in named]
    name = f"{stem}+{'+'.join(words)}"
    return name if len(name) <= 120 else f"{stem}+{json_digest(named, 12)}"
