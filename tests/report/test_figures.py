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
