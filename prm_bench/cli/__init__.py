"""The `prm-bench` command line: `app` (typer) and its commands, one module per group:
`listing` (list), `data` and `fetch` (data ...), `run` (run, tune), `results` (status, report)."""

from prm_bench.cli import data, fetch, listing, results, run  # noqa: F401 - they add commands
from prm_bench.cli.app import app


def main() -> None:
    """Entry point for `python -m prm_bench`."""
    app()


__all__ = ["app", "main"]
