"""The one small registry used by every pluggable family of prm-bench.

A registry maps names to objects (functions, specs, classes). Names are what configs
and the command line use, so an unknown name fails loudly with a close-match suggestion
and registering a name twice is refused.
"""

from __future__ import annotations

import difflib
import fnmatch
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
    """

    def __init__(self, family: str, doc: str = "") -> None:
        self.family = family
        self.__doc__ = doc
        self._entries: dict[str, T] = {}
        self._resolvers: dict[str, Callable[[str], T]] = {}

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
        self._entries[name] = obj

    def add_prefix(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Resolve any name starting with `prefix` (e.g. "timm:") through `resolver(rest)`."""
        if prefix in self._resolvers:
            raise ValueError(f"{self.family} prefix {prefix!r} is already registered")
        self._resolvers[prefix] = resolver

    def get(self, name: str) -> T:
        """Return the entry called `name`, or raise `UnknownNameError` naming close matches."""
        if name in self._entries:
            return self._entries[name]
        for prefix, resolver in self._resolvers.items():
            if name.startswith(prefix):
                return resolver(name[len(prefix) :])
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        """The message for an unknown `name`: close matches first, then every choice."""
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        choices = ", ".join(self._entries)
        prefixes = "".join(f", or {p}<name>" for p in self._resolvers)
        return f"unknown {self.family} {name!r}{hint} (choose from: {choices}{prefixes})"

    def describe(self, name: str) -> tuple[str, str]:
        """(properties, description) of the entry `name`, for `prm-bench list`."""
        return describe_entry(self.get(name))

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register `obj` as `name` for the block, then remove it, or put back the entry
        it stood in for (tests register throwaway entries, or rehearse a real one
        against local files, without leaking them into other tests)."""
        previous = self._entries.get(name)
        self._entries[name] = obj
        try:
            yield obj
        finally:
            if previous is None:
                del self._entries[name]
            else:
                self._entries[name] = previous

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the fnmatch `pattern`, in registration order."""
        return [n for n in self._entries if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._entries or any(name.startswith(p) for p in self._resolvers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {len(self)} entries)"
