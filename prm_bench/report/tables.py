"""Paper-style tables from a run's tidy results (one row per cell and metric).

Cells are grouped by the set of grid axes they vary (a sub-grid of an ablation study);
each group is one table. Values are in %, mean +- std over seeds, with the paper's number
and the difference where the paper published one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from prm_bench.report.paper import paper_value

MAIN = ["mAP@0.25", "mAP@0.5", "mAP@0.75", "abo", "mIoU"]
SEED_AXES = ("train.seed",)


@dataclass(frozen=True)
class TableSpec:
    """What a table over some axes shows."""

    key: str
    title: str
    metrics: list[str]
    protocol: str


SPECS: dict[frozenset[str], TableSpec] = {
    frozenset({"method.name"}): TableSpec(
        "t1_instance",
        "T1/T4. Instance and semantic segmentation: PRM vs CAM baselines",
        MAIN,
        "mAP^r VOC style (all-point), ABO, semantic mIoU",
    ),
    frozenset({"stimulation.name"}): TableSpec(
        "t2_t3_stimulation",
        "T2/T3. Peak stimulation variants: pointing, PRM quality, instances",
        ["pointing_mAP", "prm_correct", "prm_score/1", "prm_score/2-5", "prm_score/6+", "mAP@0.5"],
        "pointwise localization (18 px at VOC's scale, scaled with the image), PRM quality "
        "(share > 0.5, void left out; mean score by objects), mAP^r",
    ),
    frozenset({"retrieval.terms"}): TableSpec(
        "t5_terms", "T5. Retrieval-term subsets", MAIN, "mAP^r VOC style, ABO, mIoU"
    ),
    frozenset({"retrieval.terms", "stimulation.name"}): TableSpec(
        "t5_terms_x_stimulation", "T5. Retrieval terms x stimulation", MAIN, "mAP^r VOC style, ABO"
    ),
    frozenset({"proposals.gallery"}): TableSpec(
        "t6_galleries",
        "T6. Proposal galleries: proposals, proposals + GT, GT only",
        MAIN,
        "mAP^r VOC style, ABO",
    ),
    frozenset({"backbone.name"}): TableSpec(
        "t7_backbones",
        "T7. Backbones (paper: VGG16 vs ResNet50)",
        [*MAIN, "pointing_mAP", "prm_correct"],
        "every metric",
    ),
}


@dataclass
class ReportTable:
    """A formatted table and what it was computed from."""

    spec: TableSpec
    axes: list[str]
    frame: pd.DataFrame  # display strings
    numbers: pd.DataFrame  # mean values (%), index = axis values
    std: pd.DataFrame
    seeds: int
    paper: dict[tuple, dict[str, float]] = field(default_factory=dict)
    cells: dict[object, list[int]] = field(default_factory=dict)  # row -> its cells
    # settings a sub-grid fixes for all its rows (e.g. another backbone), shown in the title
    context: dict[str, object] = field(default_factory=dict)
    # the run is on the paper's data (VOC 2012 val): only then are its numbers compared
    on_paper_data: bool = True


def axis_columns(results: pd.DataFrame) -> list[str]:
    """The grid-axis columns of a results frame."""
    fixed = {"cell", "seed", "protocol", "metric", "value", "variant"}
    return [c for c in results.columns if c not in fixed]


def _group_key(row: pd.Series, axes: list[str], declared: set[str] | None) -> frozenset[str]:
    if declared is not None:  # the cell's sub-grid axes, a null value (e.g. a stride) included
        return frozenset(a for a in axes if a in declared and a not in SEED_AXES)
    return frozenset(a for a in axes if pd.notna(row[a]) and a not in SEED_AXES)


def build_tables(
    results: pd.DataFrame,
    cell_axes: dict[int, set[str]] | None = None,
    on_paper_data: bool = True,
) -> list[ReportTable]:
    """One table per set of varied axes found in the results.

    Args:
        results: the run's tidy results.
        cell_axes: each cell's grid axes (from the manifest); without it a cell's axes
            are its non-empty axis columns, which misses axes whose value is null.
        on_paper_data: the run is on PASCAL VOC 2012 val. Otherwise the paper's numbers
            are a reference on another dataset: a `VOC ref.` column, and no difference.
    """
    if results.empty:
        return []
    axes = axis_columns(results)
    cells = results.drop_duplicates("cell").set_index("cell")
    groups: dict[frozenset[str], list[int]] = {}
    for cell, row in cells.iterrows():
        declared = cell_axes.get(cell) if cell_axes is not None else None
        groups.setdefault(_group_key(row, axes, declared), []).append(cell)
    tables = []
    for grouped, members in groups.items():
        if not grouped:
            continue
        varied = _independent_axes(cells.loc[members], grouped)
        table_axes = [a for a in axes if a in varied]
        context = {
            a: _shown(cells.loc[members[0], a])
            for a in axes
            if a in grouped and a not in varied and cells.loc[members, a].nunique(dropna=False) == 1
        }
        spec = SPECS.get(varied) or TableSpec(
            "axes_" + "_".join(a.replace(".", "-") for a in table_axes),
            "Reproduction axis: " + " x ".join(table_axes),
            MAIN,
            "mAP^r VOC style, ABO, mIoU",
        )
        table = _table(results[results.cell.isin(members)], table_axes, spec, on_paper_data)
        table.context = context
        tables.append(table)
    _distinguish(tables)
    # the paper's tables first (t1, t2, ...), then the reproduction axes
    return sorted(tables, key=lambda t: (t.spec.key.startswith("axes_"), t.spec.key))


def _shown(value: object) -> object:
    """An axis value as written in the config (CSV turns ints into floats, null into NaN)."""
    if isinstance(value, float):
        return "null" if np.isnan(value) else int(value) if value.is_integer() else value
    return value


def _distinguish(tables: list[ReportTable]) -> None:
    """Tables over the same axes (sub-grids that fix other settings) get their fixed
    settings in the title and a numbered key, the one with the fewest fixed settings
    keeping the plain key."""
    by_key: dict[str, list[ReportTable]] = {}
    for table in tables:
        by_key.setdefault(table.spec.key, []).append(table)
    for same in by_key.values():
        if len(same) < 2:
            continue
        same.sort(key=lambda t: len(t.context))
        for number, table in enumerate(same[1:], start=2):
            fixed = ", ".join(f"{a}={v}" for a, v in table.context.items())
            table.spec = replace(
                table.spec, key=f"{table.spec.key}_{number}", title=f"{table.spec.title} ({fixed})"
            )


def _independent_axes(cells: pd.DataFrame, varied: frozenset[str]) -> frozenset[str]:
    """Drop axes that are a function of another varied axis (a zipped companion, e.g.
    the GAP training that comes with every CAM baseline), so the table is keyed by the
    axis that was meant to vary."""
    kept = [a for a in cells.columns if a in varied]
    for axis in reversed(list(kept)):  # on a one-to-one pair the first-listed axis stays
        others = [o for o in kept if o != axis]
        if any(cells.groupby(o)[axis].nunique().max() <= 1 for o in others):
            kept.remove(axis)
    return frozenset(kept)


def _table(
    rows: pd.DataFrame, axes: list[str], spec: TableSpec, on_paper_data: bool = True
) -> ReportTable:
    rows = rows[rows.metric.isin(spec.metrics)]
    grouped = rows.groupby([*axes, "metric"], sort=False)["value"]
    mean = grouped.mean().unstack("metric") * 100
    std = grouped.std(ddof=1).unstack("metric").fillna(0.0) * 100
    seeds = int(rows.groupby([*axes, "metric"])["seed"].nunique().max()) if len(rows) else 0
    metrics = [m for m in spec.metrics if m in mean.columns]
    mean, std = mean[metrics], std[metrics]
    display = pd.DataFrame(index=mean.index)
    paper: dict[tuple, dict[str, float]] = {}
    for metric in metrics:
        display[metric] = [
            _cell(mean.loc[i, metric], std.loc[i, metric], seeds) for i in mean.index
        ]
        if len(axes) == 1:
            published = [paper_value(axes[0], i, metric) for i in mean.index]
            if any(p is not None for p in published):
                column = f"{metric} paper" if on_paper_data else f"{metric} VOC ref."
                display[column] = ["" if p is None else f"{p:.1f}" for p in published]
                if on_paper_data:  # a difference across datasets would read as a reproduction
                    display[f"{metric} diff"] = [
                        "" if p is None else f"{mean.loc[i, metric] - p:+.1f}"
                        for i, p in zip(mean.index, published, strict=True)
                    ]
                for i, p in zip(mean.index, published, strict=True):
                    if p is not None:
                        paper.setdefault((i,), {})[metric] = p
    cells = {
        value: sorted(group.cell.unique().tolist())
        for value, group in rows.groupby(axes[0] if len(axes) == 1 else axes, sort=False)
    }
    return ReportTable(
        spec, axes, display.reset_index(), mean, std, seeds, paper, cells,
        on_paper_data=on_paper_data,
    )  # fmt: skip


def _cell(mean: float, std: float, seeds: int) -> str:
    if np.isnan(mean):
        return "-"
    return f"{mean:.1f} +- {std:.1f}" if seeds > 1 else f"{mean:.1f}"


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (no extra dependency)."""
    if table.empty:
        return "(nothing to show: the run has no rows for this table)"
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _escape(text: object) -> str:
    return str(text).replace("_", r"\_").replace("%", r"\%").replace("+-", r"$\pm$")


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A booktabs table."""
    columns = "l" * len(table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_escape(caption)}}}",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
