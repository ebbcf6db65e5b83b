"""The paper's claims as data, each measured as a paired difference of two table rows
with a bootstrap CI and a verdict (DESIGN 3, Uncertainty).

A claim says that one row ("better") beats another ("worse") on a metric; its paper
effect is computed from the published numbers (`prm_bench.report.paper`). The verdict is
`holds` when the 95% CI of better minus worse lies above 0, `contradicted` when below,
and `inconclusive` when it contains 0.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from prm_bench.metrics.bootstrap import Interval, Statistics, holm, paired_bootstrap, supports
from prm_bench.report.paper import paper_value
from prm_bench.report.tables import ReportTable


@dataclass(frozen=True)
class Claim:
    """`better` beats `worse` (rows of the table over `axis`, fnmatch patterns on the
    axis value without a `timm:` prefix) on `metric`.

    Attributes:
        stated_effect: the paper's effect where it states one in words rather than in a
            table (e.g. "about +2.5"); otherwise it is computed from the paper numbers.
    """

    text: str
    axis: str
    better: str
    worse: str
    metric: str
    stated_effect: float | None = None
    where: tuple[tuple[str, str], ...] = ()  # settings the compared rows must have

    def table(self, tables: list[ReportTable]) -> ReportTable | None:
        """The table this claim reads: over `axis`, with the `where` settings fixed (the
        one with the fewest fixed settings when `where` is empty)."""
        candidates = [
            t
            for t in tables
            if t.axes == [self.axis]
            and self.metric in t.numbers.columns
            and all(str(t.context.get(a)) == v for a, v in self.where)
        ]
        return min(candidates, key=lambda t: len(t.context), default=None)

    def paper_effect(self) -> float | None:
        """The published difference (percentage points), where the paper gives one."""
        if self.stated_effect is not None:
            return self.stated_effect
        better = paper_value(self.axis, self.better.rstrip("*"), self.metric)
        worse = paper_value(self.axis, self.worse.rstrip("*"), self.metric)
        return None if better is None or worse is None else better - worse

    def rows(self, values: list) -> tuple[object, object] | None:
        """The table rows this claim compares, if the table has both."""

        def first(pattern: str) -> object | None:
            return next(
                (v for v in values if fnmatch.fnmatch(str(v).removeprefix("timm:"), pattern)),
                None,
            )

        better, worse = first(self.better), first(self.worse)
        return None if better is None or worse is None else (better, worse)


_STIMULATION = "stimulation.name"
CLAIMS = [
    Claim("Removing the instance-aware term lowers mAP^r@0.5", "retrieval.terms", "full",
          "no-instance", "mAP@0.5"),
    Claim("The boundary-aware term raises mAP^r@0.5", "retrieval.terms", "full", "no-boundary",
          "mAP@0.5", stated_effect=2.5),
    Claim("The class-aware term raises mAP^r@0.5", "retrieval.terms", "full", "no-class",
          "mAP@0.5"),
    Claim("GT masks as gallery give far higher mAP^r@0.75 than proposals", "proposals.gallery",
          "gt", "embedded", "mAP@0.75"),
    Claim("Adding GT masks to the proposals raises mAP^r@0.75", "proposals.gallery",
          "gt+embedded", "embedded", "mAP@0.75"),
    Claim("PRM beats CAM + proposals on mAP^r@0.5", "method.name", "prm", "cam-proposal",
          "mAP@0.5"),
    Claim("PRM beats CAM boxes (rectangles) on mAP^r@0.5", "method.name", "prm", "cam-rect",
          "mAP@0.5"),
    Claim("PRM beats CAM boxes (ellipses) on mAP^r@0.5", "method.name", "prm", "cam-ellipse",
          "mAP@0.5"),
    Claim("Peak stimulation beats GAP on pointwise localization", _STIMULATION, "peak", "gap",
          "pointing_mAP"),
    Claim("Peak stimulation gives better PRMs than GAP (CAM)", _STIMULATION, "peak", "gap",
          "prm_correct"),
    Claim("Peak stimulation gives better PRMs than GMP (DeepMIL)", _STIMULATION, "peak", "gmp",
          "prm_correct"),
    Claim("Peak stimulation gives better PRMs than max-min (WILDCAT)", _STIMULATION, "peak",
          "maxmin", "prm_correct"),
    Claim("Peak stimulation beats GAP on mAP^r@0.5", _STIMULATION, "peak", "gap", "mAP@0.5"),
    Claim("Peak stimulation beats GAP on pointwise localization (ImageNet EfficientNet-Lite0)",
          _STIMULATION, "peak", "gap", "pointing_mAP",
          where=(("backbone.name", "efficientnet_lite0-s16"),)),
    Claim("ResNet beats VGG on mAP^r@0.5", "backbone.name", "resnet*", "vgg*", "mAP@0.5"),
]  # fmt: skip

NO_STATISTICS = "inconclusive (no per-image statistics)"


def measure_claims(
    tables: list[ReportTable],
    statistics: Callable[[int], Statistics | None] | None = None,
    seed_of: Callable[[int], int] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[Interval]]:
    """Each claim whose rows the run has: its effect, 95% CI and verdict.

    Args:
        tables: the report's tables (`build_tables`).
        statistics: a cell's per-image statistics (None where it has none).
        seed_of: a cell's training seed, to pair the two sides seed by seed.
        resamples: bootstrap draws.
        seed: the bootstrap generator's seed.

    Returns:
        The claims table (values in percentage points) and the intervals of its rows
        (None where no CI could be computed).
    """
    rows, intervals = [], []
    for claim in CLAIMS:
        table = claim.table(tables)
        pair = claim.rows(list(table.numbers.index)) if table is not None else None
        if pair is None:
            continue
        better, worse = pair
        point = table.numbers.loc[better, claim.metric] - table.numbers.loc[worse, claim.metric]
        interval = None
        if statistics is not None and seed_of is not None:
            interval = _interval(claim, table, pair, statistics, seed_of, resamples, seed)
        paper = claim.paper_effect()
        rows.append(
            {
                "claim": claim.text,
                "comparison": f"{claim.axis}: {better} vs {worse} ({claim.metric})"
                + "".join(f"; {a}={v}" for a, v in claim.where),
                "paper effect": "" if paper is None else f"{paper:+.1f}",
                "measured effect": f"{point:+.1f}",
                "95% CI": ""
                if interval is None
                else f"[{interval.low * 100:+.1f}, {interval.high * 100:+.1f}]",
                "verdict": NO_STATISTICS if interval is None else interval.verdict(),
                "magnitude vs paper": ""
                if interval is None or paper is None
                else interval.magnitude(paper / 100),
                "seed sd": _points(interval and interval.seed_sd),
                "image-only 95% CI": ""
                if interval is None or interval.image_low is None
                else f"[{interval.image_low * 100:+.1f}, {interval.image_high * 100:+.1f}]",
            }
        )
        intervals.append(interval)
    return _corrected(pd.DataFrame(rows), intervals), intervals


ALPHA = 0.05  # the family-wise error rate the claims are controlled at


def _points(share: float | None) -> str:
    return "" if share is None else f"{share * 100:.1f}"


def _corrected(claims: pd.DataFrame, intervals: list[Interval | None]) -> pd.DataFrame:
    """Holm-Bonferroni over the claims with a CI: each gets its adjusted bootstrap
    p-value, and a verdict stands only when its CI excludes 0 and the adjusted p-value is
    below `ALPHA` (13 claims tested at once would otherwise find one by chance)."""
    tested = [i for i, interval in enumerate(intervals) if interval is not None]
    if claims.empty:
        return claims
    claims["Holm p"] = ""
    adjusted = holm([intervals[i].p_value for i in tested]) if tested else []
    for index, p_value in zip(tested, adjusted, strict=True):
        claims.loc[index, "Holm p"] = f"{p_value:.3f}"
        if p_value >= ALPHA and claims.loc[index, "verdict"] != "inconclusive":
            claims.loc[index, "verdict"] = "inconclusive (after Holm)"
    return claims


def _interval(
    claim: Claim,
    table: ReportTable,
    pair: tuple[object, object],
    statistics: Callable[[int], Statistics | None],
    seed_of: Callable[[int], int],
    resamples: int,
    seed: int,
) -> Interval | None:
    """The bootstrap CI of a claim, pairing the two rows' cells by training seed.

    Takes seven parameters: the claim, its table and row pair, the statistics reader,
    each cell's seed, and the bootstrap's draws and seed.
    """
    sides = []
    for value in pair:
        by_seed = {seed_of(cell): cell for cell in table.cells.get(value, [])}
        sides.append(by_seed)
    seeds = sorted(set(sides[0]) & set(sides[1]))
    stats = [[statistics(side[s]) for s in seeds] for side in sides]
    usable = all(s is not None and supports(s, claim.metric) for side in stats for s in side)
    if not seeds or not usable:
        return None
    return paired_bootstrap(stats[0], stats[1], claim.metric, resamples, seed)


def claims_method(intervals: list) -> list[str]:
    """The claims section's method paragraph, for the intervals it shows."""
    measured = [i for i in intervals if i is not None]
    if not intervals:
        return ["No claim of the paper matches this run's grid (no pair of rows it compares)."]
    if not measured:
        return ["No per-image statistics in this run's store: no CI and no verdict."]
    methods = sorted({i.method for i in measured})
    return [
        f"Effects are better minus worse in percentage points (mean over seeds). The 95% CI "
        f"is a {' / '.join(methods)} with {measured[0].resamples} seeded resamples: both "
        "sides are recomputed on the same draw. Verdict: **holds** when the CI is above 0, "
        "**contradicted** when below, **inconclusive** when it contains 0. The "
        f"{len(measured)} claims with a CI are one family, controlled by Holm-Bonferroni "
        "on their two-sided bootstrap p-values (`Holm p`): a verdict stands only when that "
        "is below 0.05 as well, else it reads *inconclusive (after Holm)*. `magnitude vs "
        "paper` says whether the paper's effect lies in the CI (**agrees**) or the measured "
        "one is **smaller** or **larger**: a sign that holds can still miss the size. With "
        "several seeds, `seed sd` is the spread of the per-seed effects and `image-only 95% "
        "CI` the CI with the seeds held fixed: they measure different things."
    ]
