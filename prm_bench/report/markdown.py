"""Text pieces the report's pages share: paths as the reader typed them, the config's
own words."""

from __future__ import annotations

from pathlib import Path


def setting_lines(source: Path | str | None) -> list[str]:
    """The leading comment block of the run's config file (what the setting is and why),
    as a quoted paragraph."""
    path = Path(source) if source else None
    if path is None or not path.is_file():
        return []
    comments = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comments.append("> " + line.removeprefix("#").strip())
    return [*comments, ""] if comments else []


def shown_path(source: str | None) -> str | None:
    """The config path relative to the working directory where possible."""
    if source is None:
        return None
    try:
        return str(Path(source).resolve().relative_to(Path.cwd()))
    except ValueError:
        return source
