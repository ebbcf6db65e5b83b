import numpy as np
import pandas as pd
import pytest

from prm_bench.report.claims import NO_STATISTICS, measure_claims
from prm_bench.report.tables import build_tables


def synthetic_results() -> pd.DataFrame:
    rows = []
    cells = [
        ({"method.name": "prm", "stimulation.name": "peak"}, 0.30),
        ({"method.name": "cam-proposal", "stimulation.name": "gap"}, 0.10),
        ({"retrieval.terms": "full"}, 0.30),
        ({"retrieval.terms": "no-instance"}, 0.12),
    ]
    for index, (axes, value) in enumerate(cells):
        for seed, noise in ((0, 0.0), (1, 0.02)):
            for metric in ("mAP@0.5", "abo"):
                rows.append({"cell": 10 * index + seed, **axes, "seed": seed, "protocol": "voc",
                             "metric": metric, "value": value + noise})  # fmt: skip
    return pd.DataFrame(rows)


def test_tables_group_cells_by_varied_axis_with_seeds_and_paper_numbers():
    tables = {t.spec.key: t for t in build_tables(synthetic_results())}
    assert set(tables) == {"t1_instance", "t5_terms"}
    t1 = tables["t1_instance"]
    assert t1.axes == ["method.name"]  # the zipped stimulation is a function of the method
    assert t1.seeds == 2
    assert t1.numbers.loc["prm", "mAP@0.5"] == pytest.approx(31.0)
    assert t1.std.loc["prm", "mAP@0.5"] == pytest.approx(np.std([30, 32], ddof=1))
    row = t1.frame.set_index("method.name").loc["prm"]
    assert row["mAP@0.5"] == "31.0 +- 1.4"
    assert row["mAP@0.5 paper"] == "26.8" and row["mAP@0.5 diff"] == "+4.2"
    # on another dataset the paper's number is a labelled reference with no difference
    other = build_tables(synthetic_results(), on_paper_data=False)[0].frame
    assert "mAP@0.5 VOC ref." in other.columns and not any("diff" in c for c in other.columns)
    claims, intervals = measure_claims(list(tables.values()))
    instance = claims.set_index("comparison").loc["retrieval.terms: full vs no-instance (mAP@0.5)"]
    assert instance["measured effect"] == "+18.0" and instance["paper effect"] == "+13.5"
    # without per-image statistics there is no CI, so no verdict either way
    assert instance["verdict"] == NO_STATISTICS and intervals == [None, None]


def test_sub_grids_over_the_same_axis_get_their_own_tables_and_claims():
    rows = []
    for index, (axes, value) in enumerate(
        [
            ({"stimulation.name": "peak"}, 0.9),
            ({"stimulation.name": "gap"}, 0.8),
            ({"stimulation.name": "peak", "backbone.name": "efficientnet_lite0-s16"}, 0.5),
            ({"stimulation.name": "gap", "backbone.name": "efficientnet_lite0-s16"}, 0.7),
        ]
    ):
        rows.append({"cell": index, "stimulation.name": None, "backbone.name": None, **axes,
                     "seed": 0, "protocol": "pointing", "metric": "pointing_mAP",
                     "value": value})  # fmt: skip
    results = pd.DataFrame(rows)
    results.loc[results["backbone.name"].notna(), "train.lr"] = 0.1  # a second fixed setting
    tables = build_tables(results)
    keys = sorted(t.spec.key for t in tables)
    assert keys == ["t2_t3_stimulation", "t2_t3_stimulation_2"]
    lite = next(t for t in tables if t.context)
    assert lite.context["backbone.name"] == "efficientnet_lite0-s16"
    assert "backbone.name=efficientnet_lite0-s16" in lite.spec.title
    claims, _ = measure_claims(tables)
    effects = dict(zip(claims.comparison, claims["measured effect"], strict=True))
    assert effects["stimulation.name: peak vs gap (pointing_mAP)"] == "+10.0"
    lite_claim = (
        "stimulation.name: peak vs gap (pointing_mAP); backbone.name=efficientnet_lite0-s16"
    )
    assert effects[lite_claim] == "-20.0"


def test_a_zipped_axis_with_a_null_value_keeps_its_cells_in_one_table():
    rows = [
        {"cell": 0, "backbone.name": "resnet10t", "backbone.output_stride": 16.0},
        {"cell": 1, "backbone.name": "vgg11_bn", "backbone.output_stride": None},
    ]
    results = pd.DataFrame(
        [{**r, "seed": 0, "protocol": "voc", "metric": "mAP@0.5", "value": 0.3 + r["cell"] / 10}
         for r in rows]
    )  # fmt: skip
    axes = {0: {"backbone.name", "backbone.output_stride"}} | {
        1: {"backbone.name", "backbone.output_stride"}
    }
    (table,) = build_tables(results, axes)
    assert table.axes == ["backbone.name"] and len(table.numbers) == 2
    assert len(build_tables(results)) == 2  # without the declared axes the null splits them
