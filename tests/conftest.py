import pytest
import torch

from prm_bench.data.shapes import ShapesConfig, generate_shapes


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def make_shapes(tmp_path_factory):
    """Generate (once per session and config) a small shapes tree; returns its root."""
    made = {}

    def make(**settings):
        config = ShapesConfig(**settings)
        if config not in made:
            made[config] = generate_shapes(
                tmp_path_factory.mktemp("data") / "shapes", config, jobs=1
            )
        return made[config]

    return make
