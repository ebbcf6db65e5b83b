from prm_bench.config import load_plan
from prm_bench.config.keys import stage_keys


def test_stage_keys_depend_only_on_what_each_stage_reads():
    plan = load_plan(
        {"grid": {"retrieval.terms": ["full", "no-class"], "eval.tolerance": [18, 10]}}
    )
    keys = [stage_keys(c.config) for c in plan.cells]
    assert len({k["train"] for k in keys}) == len({k["infer"] for k in keys}) == 1
    assert len({k["retrieve"] for k in keys}) == 2
    assert len({k["evaluate"] for k in keys}) == 4
    other = load_plan(
        {"grid": {"method.name": ["cam-rect"], "retrieval.terms": ["full", "no-class"]}}
    )
    # a baseline does not read the retrieval terms: both cells share their retrieval
    assert len({stage_keys(c.config)["retrieve"] for c in other.cells}) == 1
    seeds = load_plan({"grid": {"train.seed": [0, 1]}})
    assert len({stage_keys(c.config)["train"] for c in seeds.cells}) == 2


def test_the_prm_strategy_does_not_change_the_inference_key():
    plan = load_plan(
        {
            "grid": {
                "infer.strategy": ["batched", "sequential"],
                "infer.chunk_size": [None, 4],
                "infer.upsample": [1, 2],
            }
        }
    )
    keys = {(c.config.infer.upsample, stage_keys(c.config)["infer"]) for c in plan.cells}
    assert len(keys) == 2  # one key per upsample factor, whatever the strategy
