"""Tiny models and digit images for the tuner's tests."""

import pytest
import torch

from skvlm.testing import GENERATIVE_FAMILIES


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Tiny models: a second intra-op thread only adds spinning, which on a shared
    # 2-core box slows every training step several-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def family_paths(tmp_path_factory):
    """Builds each family's tiny model once, on first use."""
    built = {}

    def get(family):
        if family not in built:
            folder = tmp_path_factory.mktemp(f"tuning_{family}")
            built[family] = str(GENERATIVE_FAMILIES[family](folder))
        return built[family]

    return get
