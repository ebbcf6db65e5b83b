"""Report figures, built with matplotlib's object API (no pyplot, no global backend)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from prm_bench.atomic import atomic_path
from prm_bench.report.paper import paper_value
from prm_bench.report.tables import ReportTable

COLORS = np.array(
    [
        [0.12, 0.47, 0.71],
        [1.0, 0.5, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.4, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.5, 0.5, 0.5],
    ]
)


def save(figure: Figure, folder: Path, name: str) -> list[Path]:
    """Write a figure as PNG and PDF; returns the paths. The PDF carries no creation
    date, so the same figure gives the same bytes (reports diff cleanly)."""
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    with atomic_path(png, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=150, bbox_inches="tight")
    with atomic_path(pdf, suffix=".pdf") as tmp:
        figure.savefig(tmp, dpi=150, bbox_inches="tight", metadata={"CreationDate": None})
    return [png, pdf]


def headline_metric(table: ReportTable) -> str:
    """The metric a table's bar chart shows."""
    for metric in ("mAP@0.5", "pointing_mAP", "mAP@0.75"):
        if metric in table.numbers.columns:
            return metric
    return str(table.numbers.columns[0])


def bar_chart(table: ReportTable) -> Figure:
    """Bars of the headline metric per row, seed std as error bars, paper values as marks."""
    metric = headline_metric(table)
    labels = [
        _short(" / ".join(map(str, i)) if isinstance(i, tuple) else str(i))
        for i in table.numbers.index
    ]
    values = table.numbers[metric].to_numpy()
    errors = table.std[metric].to_numpy() if metric in table.std.columns else None
    width = min(MAX_WIDTH_INCHES, max(4.0, 0.8 * len(labels) + 1.5))
    figure = Figure(figsize=(width, 3.4), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(labels))
    axes.bar(positions, values, yerr=errors, capsize=3, color=COLORS[0], label="this run")
    if len(table.axes) == 1:
        paper = [paper_value(table.axes[0], i, metric) for i in table.numbers.index]
        marks = [(x, p) for x, p in zip(positions, paper, strict=True) if p is not None]
        if marks:
            axes.scatter(
                *zip(*marks, strict=True),
                marker="D",
                color=COLORS[3],
                zorder=3,
                label="paper" if table.on_paper_data else "paper on VOC (another dataset)",
            )
            axes.legend(fontsize=8)
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(f"{metric} (%)")
    # the title names the plotted metric (the table has more), wrapped to the figure
    title = f"{table.spec.title.split(':')[0]}: {metric}"
    axes.set_title("\n".join(textwrap.wrap(title, int(width * 11))), fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    return figure


MAX_WIDTH_INCHES = 12.0  # at 150 dpi a figure stays under 2,000 px wide


def _short(label: str, most: int = 40) -> str:
    """A tick label cut to `most` characters (a long one widened the figure past 2,800 px)."""
    return label if len(label) <= most else label[: most - 3] + "..."


def backbone_comparison(table: ReportTable) -> Figure:
    """Grouped bars: every metric of the backbone table, one colour per backbone."""
    metrics = list(table.numbers.columns)
    names = list(table.numbers.index)
    figure = Figure(figsize=(max(5.0, 1.0 * len(metrics) + 2), 3.4), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        positions = np.arange(len(metrics)) + k * width
        errors = table.std.loc[name, metrics].to_numpy()
        axes.bar(positions, table.numbers.loc[name, metrics], width, yerr=errors, capsize=2,
                 color=COLORS[k % len(COLORS)], label=str(name))  # fmt: skip
    axes.set_xticks(
        np.arange(len(metrics)) + 0.4 - width / 2, metrics, rotation=30, ha="right", fontsize=8
    )
    axes.set_ylabel("%")
    axes.set_title("Backbones on every metric", fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return figure


def claims_forest(claims, intervals: list) -> Figure:
    """Each claim's effect (better minus worse, percentage points) with its 95% CI, the
    paper's effect as a cross where published, and 0 as a reference line."""
    rows = [(c, i) for (_, c), i in zip(claims.iterrows(), intervals, strict=True) if i]
    figure = Figure(figsize=(7.5, 0.42 * len(rows) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    colours = {"holds": COLORS[2], "contradicted": COLORS[3], "inconclusive": COLORS[7]}
    for y, (claim, interval) in enumerate(rows):
        colour = colours[claim["verdict"].split(" ")[0]]  # "inconclusive (after Holm)" too
        axes.errorbar(
            interval.effect * 100,
            y,
            xerr=[
                [(interval.effect - interval.low) * 100],
                [(interval.high - interval.effect) * 100],
            ],
            fmt="o",
            color=colour,
            capsize=3,
        )
        if claim["paper effect"]:
            axes.plot(float(claim["paper effect"]), y, "x", color="black")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(rows)), [c["claim"] for c, _ in rows], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("effect, percentage points (dot: this run with 95% CI; x: paper)")

    legend = [
        Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in colours.items()
    ]
    legend.append(Line2D([], [], marker="x", linestyle="", color="black", label="paper"))
    axes.legend(handles=legend, fontsize=7, loc="lower right", framealpha=0.9)
    return figure


def training_curves(logs: dict[str, list[dict]]) -> Figure:
    """Loss and evaluation classification mAP per epoch, one line per trained model."""
    figure = Figure(figsize=(8, 3.2 + 0.16 * len(logs)), layout="constrained")
    loss_axes, map_axes = figure.subplots(1, 2)
    for k, (label, log) in enumerate(sorted(logs.items())):
        epochs = [entry["epoch"] for entry in log]
        # colour and line style together: no two of up to 24 models look alike
        style = {"color": COLORS[k % len(COLORS)], "linestyle": LINES[k // len(COLORS) % 3],
                 "marker": "o", "markersize": 3}  # fmt: skip
        loss_axes.plot(epochs, [e["loss"] for e in log], label=label, **style)
        map_axes.plot(epochs, [100 * e["eval_classification_mAP"] for e in log], **style)
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="Loss")
    map_axes.set(
        xlabel="epoch", ylabel="classification mAP (%)", title="Evaluation classification mAP"
    )
    for axes in (loss_axes, map_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.2 and 1.4
    figure.legend(loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    return figure


LINES = ("-", "--", ":")


def pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float = 0.5) -> Figure:
    """Precision-recall curves at one IoU threshold (all classes ranked together)."""
    figure = Figure(figsize=(4.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    for k, (label, (recall, precision)) in enumerate(curves.items()):
        axes.plot(recall, precision, color=COLORS[k % len(COLORS)], label=label)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title=f"Precision-recall at IoU {threshold:g}")  # fmt: skip
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return figure


def _overlay(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    out = image.astype(np.float64) / 255.0
    for k, mask in enumerate(masks):
        color = COLORS[k % len(COLORS)]
        out[mask] = 0.45 * out[mask] + 0.55 * color
    return out


def qualitative_panel(samples: list[dict]) -> Figure:
    """Per sample: image, class response map, PRMs, retrieved masks, ground truth."""
    titles = [
        "image",
        "class response (max)",
        "peak response maps",
        "retrieved instances",
        "ground truth",
    ]
    figure = Figure(figsize=(2.2 * len(titles), 2.2 * len(samples)), layout="constrained")
    grid = figure.subplots(len(samples), len(titles), squeeze=False)
    for row, sample in zip(grid, samples, strict=True):
        image = sample["image"]
        prms = sample["prms"]
        prm_view = (
            (prms / np.maximum(prms.reshape(len(prms), -1).max(1), 1e-12)[:, None, None]).max(0)
            if len(prms)
            else np.zeros(image.shape[:2])
        )
        panels = [
            image / 255.0,
            sample["crm"],
            prm_view,
            _overlay(image, sample["predicted"]),
            _overlay(image, sample["truth"]),
        ]
        for axes, panel, title in zip(row, panels, titles, strict=True):
            axes.imshow(panel, cmap="magma" if panel.ndim == 2 else None)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(title, fontsize=8)
        row[0].set_ylabel(sample["id"], fontsize=7)
    return figure


def read_training_logs(store: Path, labels: dict[str, str]) -> dict[str, list[dict]]:
    """log.json of every trained model in a store, keyed by a readable label."""
    logs = {}
    for path in sorted((store / "train").glob("*/log.json")):
        key = path.parent.name
        logs[labels.get(key, key)] = json.loads(path.read_text())
    return logs


def gap_waterfall(steps: list, total: Any, metric: str) -> Figure:
    """From the released defaults to the paper setting: each step (cause, Interval) in
    the config's order as a floating bar from the running sum, its CI as a whisker, then
    the sum of the steps and the measured all-flipped effect with its CI."""
    figure = Figure(figsize=(max(6.0, 0.8 * (len(steps) + 2)), 4.0))
    axes = figure.subplots()
    running = 0.0
    for x, (_, interval) in enumerate(steps):
        effect = interval.effect * 100
        color = COLORS[2] if effect >= 0 else COLORS[3]
        axes.bar(x, effect, bottom=running, color=color, width=0.6)
        top = running + effect
        axes.errorbar(x, top, yerr=[[effect - interval.low * 100], [interval.high * 100 - effect]],
                      color="black", capsize=3, linewidth=1)  # fmt: skip
        if x + 1 < len(steps):
            axes.plot([x + 0.3, x + 0.7], [top, top], color="grey", linewidth=0.8)
        running = top
    labels = [_short(cause, 36) for cause, _ in steps]
    measured = total.effect * 100
    for x, value, label in ((len(steps), running, "sum of steps"),
                            (len(steps) + 1, measured, "measured: all flipped")):  # fmt: skip
        axes.bar(x, value, color=COLORS[0] if x > len(steps) else COLORS[7], width=0.6)
        labels.append(label)
    axes.errorbar(len(steps) + 1, measured, color="black", capsize=3, linewidth=1,
                  yerr=[[measured - total.low * 100], [total.high * 100 - measured]])  # fmt: skip
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    axes.set_ylabel(f"effect on {metric} (points)")
    axes.set_title("Released defaults -> paper setting, one cause at a time (95% CI)")
    return figure
