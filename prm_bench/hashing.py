"""The one way prm-bench names things by content: SHA-256 of canonical JSON, or of a
file's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

COMPACT = (",", ":")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (hex)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def json_digest(value: Any, length: int = 16, separators: tuple[str, str] = COMPACT) -> str:
    """The first `length` hex digits of the SHA-256 of `value` as JSON with sorted keys.

    Stage keys use the compact separators; the embedded-proposal cache folders were named
    with json's default ones (", ", ": ") and keep them, so existing caches stay valid."""
    text = json.dumps(value, sort_keys=True, separators=separators)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
