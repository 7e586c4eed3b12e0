"""Shared fixtures: tiny models built once per test session, one torch thread,
and a log of the forward passes."""

import contextlib

import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.testing import (
    KeyLog,
    make_tiny_clip,
    make_tiny_llava,
    make_tiny_siglip,
    make_tiny_siglip2,
    make_tiny_vit,
    random_images,
)


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def llava_path(tmp_path_factory):
    """The tiny LLaVA (seed 0), built once per session: tests only read it."""
    return str(make_tiny_llava(tmp_path_factory.mktemp("llava")))


@pytest.fixture(scope="session")
def siglip_path(tmp_path_factory):
    return make_tiny_siglip(tmp_path_factory.mktemp("siglip"))


@pytest.fixture(scope="session")
def siglip2_path(tmp_path_factory):
    return make_tiny_siglip2(tmp_path_factory.mktemp("siglip2"))


@pytest.fixture(scope="session")
def vit_path(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="session")
def dinov2_path(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("dinov2"), kind="dinov2")


@pytest.fixture
def images():
    return random_images(6)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of tiny models and problems.

    On a shared 2-core machine a second thread only adds spinning, which slowed
    every step several-fold. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def logging_forward_passes(path):
    """Every ``VLMEmbeddingTransformer`` built inside gets a ``KeyLog`` callback.

    The callback is the constructor's default while the block runs, so the
    transformers a test builds, their clones, those ``probe_layers`` builds and
    those pickled into joblib workers or Ray actors all append the keys of the
    images they run to ``path``: counting its lines counts forward passes.
    """
    # skvlm's own class, not one of this file: Ray workers unpickle it by name.
    log = KeyLog(path)
    defaults = VLMEmbeddingTransformer.__init__.__kwdefaults__
    old = dict(defaults)
    defaults["callbacks"] = [log]
    try:
        yield log
    finally:
        defaults.clear()
        defaults.update(old)


@pytest.fixture
def forward_log(tmp_path):
    """A ``KeyLog`` of every image run through a model during the test."""
    with logging_forward_passes(tmp_path / "forward.log") as log:
        yield log


@pytest.fixture(scope="session")
def log_forward_passes():
    """:func:`logging_forward_passes`, for fixtures of wider scope."""
    return logging_forward_passes
