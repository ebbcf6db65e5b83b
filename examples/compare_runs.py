"""Two finished runs compared cell by cell, with a paired bootstrap CI of the difference.

    python examples/compare_runs.py runs/a runs/b [--metric mAP@0.5]

Cells are matched by their axis values; both runs must have evaluated the same images.
The CI resamples the evaluation images (and seeds, where a row has several), as the
report's claims do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prm_bench.metrics.bootstrap import paired_bootstrap, supports
from prm_bench.orchestrate.rundir import plan_from_manifest, store_of
from prm_bench.stages.evaluate import read_statistics


def compare(first: Path, second: Path, metric: str, resamples: int = 1000) -> list[dict]:
    """Per cell both runs have: the metric in each, their difference and its 95% CI."""
    plans = [plan_from_manifest(first), plan_from_manifest(second)]
    stores = [store_of(first), store_of(second)]
    by_axes = [{str(sorted(c.axes.items())): c for c in plan.cells} for plan in plans]
    rows = []
    for axes, cell in by_axes[0].items():
        other = by_axes[1].get(axes)
        if other is None:
            continue
        stats = [
            read_statistics(s, c.keys["evaluate"])
            for s, c in zip(stores, (cell, other), strict=True)
        ]
        if not all(supports(s, metric) for s in stats):
            continue
        interval = paired_bootstrap([stats[1]], [stats[0]], metric, resamples)
        rows.append({"axes": cell.axes, "difference": interval.effect,
                     "low": interval.low, "high": interval.high,
                     "verdict": interval.verdict()})  # fmt: skip
    return rows


def main() -> None:
    """Print the second run minus the first, per shared cell."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--metric", default="mAP@0.5")
    args = parser.parse_args()
    rows = compare(args.first, args.second, args.metric)
    if not rows:
        print("no cell of the two runs shares axis values and statistics of", args.metric)
    for row in rows:
        print(
            f"{row['axes']}: {100 * row['difference']:+.1f} "
            f"[{100 * row['low']:+.1f}, {100 * row['high']:+.1f}] {row['verdict']}"
        )


if __name__ == "__main__":
    main()
