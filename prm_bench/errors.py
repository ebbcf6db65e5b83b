"""The user-mistake error every floor raises, kept free of heavy imports so the CLI can
catch it without loading torch."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key path."""
