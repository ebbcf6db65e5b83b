"""The one small registry used by every pluggable family of prm-bench.

A registry maps names to objects (functions, specs, classes). Names are what configs
and the command line use, so an unknown name fails loudly with a close-match suggestion
and registering a name twice is refused.

A registry whose entries need torch to exist (functions of tensors) names them up front
with `declare` and says which module implements them (`home`): configs are validated and
`prm-bench list` answers from the declarations, and the home module, with torch, is
imported on the first `get`. Implementing a declared name checks that the entry
describes itself as declared, so a declaration cannot drift from its code.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError, ValueError):
    """Raised when a name is not in a registry; the message lists close matches.

    It is also a ValueError, so pydantic validators that look names up report it as a
    validation error of the field."""


def keyword_options(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only parameters of `function` and their defaults: the options a config
    may give a registered function (e.g. `stimulation.options`)."""
    return {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def describe_entry(entry: Any) -> tuple[str, str]:
    """(properties, description) of a registry entry for `prm-bench list`: the entry's own
    `describe()` where it has one (specs), else a function's keyword options and the
    first line of its docstring."""
    describe = getattr(entry, "describe", None)
    if callable(describe):
        return describe()
    options = ", ".join(f"{k}={v!r}" for k, v in keyword_options(entry).items())
    lines = (entry.__doc__ or "").strip().splitlines()
    return options or "-", lines[0] if lines else ""


class Registry(Generic[T]):
    """A named collection of entries of one family (backbones, stimulations, ...).

    Args:
        family: what the entries are, used in messages ("backbone").
        doc: the contract every entry fulfils.
        home: the module that implements the declared names and prefixes (imported on
            the first `get` of one of them); None when every entry is added directly.
    """

    def __init__(self, family: str, doc: str = "", home: str | None = None) -> None:
        self.family = family
        self.__doc__ = doc
        self.home = home
        self._entries: dict[str, T] = {}
        self._resolvers: dict[str, Callable[[str], T]] = {}
        self._declared: dict[str, tuple[str, str]] = {}
        self._declared_prefixes: list[str] = []

    def declare(self, name: str, properties: str, description: str) -> None:
        """Name an entry that `home` implements: listed, described and valid before
        `home` is imported; `properties` and `description` are what it describes itself as."""
        if self.home is None:
            raise ValueError(f"{self.family} registry has no home module to implement {name!r}")
        if name in self._declared or name in self._entries:
            raise ValueError(f"{self.family} {name!r} is already registered")
        self._declared[name] = (properties, description)

    def declare_prefix(self, prefix: str) -> None:
        """Name a prefix whose resolver `home` adds (`add_prefix`)."""
        if self.home is None:
            raise ValueError(f"{self.family} registry has no home module to resolve {prefix!r}")
        self._declared_prefixes.append(prefix)

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that adds an entry under `name` (default: the object's `__name__`)."""

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj)  # type: ignore[attr-defined]
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Add `obj` under `name`; a name may be registered only once."""
        if name in self._entries:
            raise ValueError(f"{self.family} {name!r} is already registered")
        declared = self._declared.get(name)
        if declared is not None and describe_entry(obj) != declared:
            raise ValueError(
                f"{self.family} {name!r} is declared as {declared} but its entry describes "
                f"itself as {describe_entry(obj)}: update the declaration"
            )
        self._entries[name] = obj

    def add_prefix(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Resolve any name starting with `prefix` (e.g. "timm:") through `resolver(rest)`."""
        if prefix in self._resolvers:
            raise ValueError(f"{self.family} prefix {prefix!r} is already registered")
        self._resolvers[prefix] = resolver

    def get(self, name: str) -> T:
        """Return the entry called `name`, or raise `UnknownNameError` naming close matches."""
        if name not in self._entries and self._unbuilt(name):
            importlib.import_module(self.home)
            if self._unbuilt(name):
                raise RuntimeError(f"{self.home} does not implement {self.family} {name!r}")
        if name in self._entries:
            return self._entries[name]
        for prefix, resolver in self._resolvers.items():
            if name.startswith(prefix):
                return resolver(name[len(prefix) :])
        raise UnknownNameError(self.unknown_message(name))

    def _unbuilt(self, name: str) -> bool:
        """Whether `name` is declared but its home has not implemented it yet."""
        if name in self._declared:
            return name not in self._entries
        prefixes = [p for p in self._declared_prefixes if name.startswith(p)]
        return any(p not in self._resolvers for p in prefixes)

    def declared(self) -> list[str]:
        """The names declared for `home` to implement, in the order they were declared."""
        return list(self._declared)

    def _prefixes(self) -> list[str]:
        return list(dict.fromkeys([*self._resolvers, *self._declared_prefixes]))

    def unknown_message(self, name: str) -> str:
        """The message for an unknown `name`: close matches first, then every choice."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        prefixes = "".join(f", or {p}<name>" for p in self._prefixes())
        return f"unknown {self.family} {name!r}{hint} (choose from: {', '.join(names)}{prefixes})"

    def describe(self, name: str) -> tuple[str, str]:
        """(properties, description) of the entry `name`, for `prm-bench list`; a declared
        entry answers from its declaration, without importing its home."""
        if name not in self._entries and name in self._declared:
            return self._declared[name]
        return describe_entry(self.get(name))

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register `obj` as `name` for the block, then remove it, or put back the entry
        it stood in for (tests register throwaway entries, or rehearse a real one
        against local files, without leaking them into other tests)."""
        previous = self._entries.get(name)
        if previous is None and name in self._declared:
            previous = self.get(name)  # stand in for the implemented entry, not its absence
        self._entries[name] = obj
        try:
            yield obj
        finally:
            if previous is None:
                del self._entries[name]
            else:
                self._entries[name] = previous

    def names(self, pattern: str = "*") -> list[str]:
        """Registered and declared names matching the fnmatch `pattern`, declared first,
        each in the order it was named."""
        every = dict.fromkeys([*self._declared, *self._entries])
        return [n for n in every if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        known = name in self._entries or name in self._declared
        return known or any(name.startswith(p) for p in self._prefixes())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {len(self)} entries)"
