"""Config files as trees: YAML that refuses a key given twice and aliases that expand past
a bound, with `extends:` (a path relative to the file) merged under the file's own keys."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from prm_bench.config.models import ConfigError


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


def read_yaml(
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
        text = path.read_text()
        _refuse_alias_bombs(text, path)
        content = yaml.load(text, Loader=_UniqueKeyLoader) or {}
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
    base = read_yaml(path.parent / parent, (*seen, path), referrer=path)
    if "grid" in content:
        base.pop("grid", None)  # a child's grid replaces its parent's, axes are not mixed
    return _merge(base, content)


MAX_NODES = 1_000_000  # a config expands to far fewer; an alias bomb to billions


def _refuse_alias_bombs(text: str, path: Path) -> None:
    """Refuse YAML whose aliases expand past `MAX_NODES` nodes (1.3 KB of nested aliases
    expands to gigabytes): the node graph is composed, with aliases shared, and its
    expanded size counted with each node's size computed once."""
    if "&" not in text or "*" not in text:
        return
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # the load reports the syntax error with its line
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # a cycle counts once
            children = node.value if isinstance(node.value, list) else []
            parts = [c for pair in children for c in (pair if isinstance(pair, tuple) else [pair])]
            sizes[id(node)] = 1 + sum(size(c) for c in parts if isinstance(c, yaml.Node))
        return sizes[id(node)]

    if root is not None and size(root) > MAX_NODES:
        raise ConfigError(
            f"{path}: its aliases expand to more than {MAX_NODES:,} values (a YAML alias "
            "bomb?); write the config out without nested aliases"
        )


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
