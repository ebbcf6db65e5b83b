def test_saved_figures_are_the_same_bytes_each_time(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from prm_bench.report import figures

    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    first = [p.read_bytes() for p in figures.save(figure, tmp_path / "a", "f")]
    second = [p.read_bytes() for p in figures.save(figure, tmp_path / "b", "f")]
    plt.close(figure)
    assert first == second and first[1].startswith(b"%PDF")
    assert b"CreationDate" not in first[1]


def test_a_table_with_long_rows_gives_a_figure_under_2000_px_titled_by_its_metric(tmp_path):
    """Issue 24 item 10: t2_t3_stimulation_2.png was 2,817 px wide, its title a dump."""
    import pandas as pd
    from PIL import Image

    from prm_bench.report import figures
    from prm_bench.report.tables import build_tables

    rows = [
        {"cell": i, "stimulation.name": f"variant-{i}-" + "x" * 60, "seed": 0,
         "protocol": "voc", "metric": metric, "value": 0.1 * i}
        for i in range(14) for metric in ("mAP@0.5", "pointing_mAP")
    ]  # fmt: skip
    (table,) = build_tables(pd.DataFrame(rows))
    figure = figures.bar_chart(table)
    assert figure.axes[0].get_title().endswith(": mAP@0.5")
    (png, _) = figures.save(figure, tmp_path, "wide")
    with Image.open(png) as image:
        assert image.size[0] < 2000


def test_training_curves_tell_every_model_apart_on_whole_epochs():
    """Issue 24 item 10: 15 lines on a 10-colour cycle shared colours; ticks read 1.2."""
    from prm_bench.report import figures

    logs = {
        f"model {k:02d}": [{"epoch": e, "loss": 1 / e, "eval_classification_mAP": 0.1 * e}
                           for e in (1, 2)]
        for k in range(15)
    }  # fmt: skip
    figure = figures.training_curves(logs)
    figure.canvas.draw()
    lines = figure.axes[0].get_lines()
    styles = {(tuple(line.get_color()), line.get_linestyle()) for line in lines}
    assert len(lines) == 15 and len(styles) == 15
    ticks = [t for t in figure.axes[0].get_xticks() if 1 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert figure.legends  # a figure legend, outside the axes
