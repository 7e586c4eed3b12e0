"""Test set-up shared by tests/ and the doctests under skvlm/: offline, quiet, seeded."""

import os
import tempfile

# Nothing may reach a model hub: fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# xdist runs one worker per core: BLAS threads on top only contend (measured:
# LogisticRegression fits 20x slower with two OpenBLAS threads per worker on a
# loaded 2-core machine). Set before numpy loads its BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# The weight-digest memo of skvlm.models lives in the user's cache; tests keep
# their own, per process.
os.environ.setdefault("SKVLM_CACHE_DIR", tempfile.mkdtemp(prefix="skvlm-cache-"))

import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# skvlm.distributed needs the optional Ray extra; without it, skip its doctests.
collect_ignore_glob = [] if importlib.util.find_spec("ray") else ["skvlm/distributed/*"]
# A plugin for the torchvision-world subprocess (-p _torchvision_world), which
# imports torchvision: never a test module of this world (--doctest-modules).
collect_ignore = ["tests/_torchvision_world.py"]


def pytest_configure(config):
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # Tiny models gain nothing from intra-op threads, and xdist already runs one
    # worker per core: more threads per worker only contend.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    np.random.seed(0)  # noqa: NPY002 (seeds code that still uses the legacy global RNG)
    torch.manual_seed(0)
