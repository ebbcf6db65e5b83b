"""What the tests share: the seeded fixtures, the shapes trees, and `tiny_config`, the one
small grid config (test_resnet, 1 epoch, 64 px) runner, report and fault tests build on."""

import pandas as pd
import pytest
import torch

from prm_bench.data.shapes import ShapesSpec, generate_shapes


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def make_shapes(tmp_path_factory):
    """Generate (once per session and config) a small shapes tree; returns its root. No
    tune split unless `n_tune` is given (it is generated, and slow, otherwise)."""
    made = {}

    def make(**settings):
        config = ShapesSpec(**{"n_tune": 0, **settings})
        if config not in made:
            made[config] = generate_shapes(
                tmp_path_factory.mktemp("data") / "shapes", config, jobs=1
            )
        return made[config]

    return make


@pytest.fixture(scope="session")
def shapes_root(make_shapes):
    """The small shapes tree the runner and report tests share."""
    return make_shapes(seed=3, n_train=24, n_val=6, size=64, classes=3)


def tiny_config(root, grid=None, **sections) -> dict:
    """A tiny config on the shapes tree at `root` (a 2-cell grid over retrieval.terms by
    default); `sections` update its sections key by key."""
    config = {
        "data": {"name": "shapes", "root": str(root)},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": 1, "batch_size": 8},
        "infer": {"upsample": 2, "max_peaks": 4},
        "proposals": {"gallery": "embedded"},
        "eval": {"metrics": ["voc-map", "abo", "pointing", "prm-quality", "semantic"]},
        "grid": grid or {"retrieval.terms": ["full", "no-instance"]},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def comparable(results: pd.DataFrame) -> pd.DataFrame:
    """Results in a fixed row order, to compare two runs."""
    return results.sort_values(["cell", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def shapes(make_shapes):
    return make_shapes(seed=13, n_train=12, n_val=4, size=48, classes=2)


def small_config(root, **sections) -> dict:
    """`tiny_config` with one cell and the least these input checks need."""
    merged = {
        "train": {"batch_size": 6},
        "infer": {"max_peaks": 3},
        "eval": {"metrics": ["voc-map"]},
    }
    grid = sections.pop("grid", {"retrieval.terms": ["full"]})
    for section, values in sections.items():
        merged[section] = {**merged.get(section, {}), **values}
    return tiny_config(root, grid=grid, **merged)


@pytest.fixture(scope="session")
def study_root(make_shapes):
    return make_shapes(seed=21, n_train=16, n_val=5, size=48, classes=2, n_tune=5)
