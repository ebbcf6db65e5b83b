import pytest

from prm_bench.config import ConfigError, load_plan
from prm_bench.config.search import parse_space
from tests.orchestrate.tuning import config_for


@pytest.fixture
def root(study_root):
    """The shapes tree of the study (with a tune split)."""
    return study_root


@pytest.mark.parametrize(
    "search, message",
    [
        ({"retrieval.gamma": {"low": 0, "high": 1}}, "search.retrieval.gamma: unknown key"),
        ({"retrieval.alpha": {"low": 2.0, "high": 0.1}}, "low 2.0 is above high 0.1"),
        ({"retrieval.terms": {"low": 0.1, "high": 1}}, "retrieval.terms is not a number"),
        ({"retrieval.alpha": {"low": "a", "high": 1}}, "retrieval.alpha.low must be a number"),
        ({"retrieval.alpha": {"low": 0, "high": 1, "log": True}}, "a log range needs low > 0"),
        ({"retrieval.top_n": {"low": 0, "high": 10}}, "retrieval.top_n does not take 0"),
        ({"retrieval.alpha": [0.1, 1]}, "expected a mapping with low and high"),
        ({"eval.prm_threshold": {"low": 0.1, "high": 0.9}}, "the eval section cannot be searched"),
        ({"retrieval.confidence": {"choices": ["retrieval", "best"]}}, "does not take 'best'"),
        ({}, "the config has no search section"),
    ],
)
def test_a_bad_search_space_is_one_line_naming_the_key(root, search, message):
    base = load_plan(config_for(root), use_grid=False).cells[0].config
    with pytest.raises(ConfigError, match=message) as caught:
        parse_space(search, base, "study.yaml")
    assert "\n" not in str(caught.value)
