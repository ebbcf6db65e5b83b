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
