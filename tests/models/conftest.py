"""Each family's tiny checkpoint and HF reference, built at most once per session."""

import pandas as pd
import pytest

from skvlm import VLMEmbeddingTransformer

from ._families import BY_NAME
from ._references import HF


class Built:
    """Lazily built checkpoints, HF-loaded models and references, by family name."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._paths, self._hf, self._references, self._images = {}, {}, {}, {}

    def path(self, name):
        if name not in self._paths:
            self._paths[name] = BY_NAME[name].build(self._tmp.mktemp(name))
        return self._paths[name]

    def hf(self, name):
        """The checkpoint loaded by transformers alone (generative families)."""
        if name not in self._hf:
            self._hf[name] = HF(self.path(name))
        return self._hf[name]

    def images(self, name):
        if name not in self._images:
            self._images[name] = BY_NAME[name].images()
        return self._images[name]

    def prompts(self, name):
        family = BY_NAME[name]
        return family.prompts or [None] * len(self.images(name))

    def reference(self, name):
        """One :class:`~._references.Example` per test image."""
        if name not in self._references:
            family = BY_NAME[name]
            self._references[name] = family.reference(
                self.path(name), self.images(name), self.prompts(name)
            )
        return self._references[name]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    return Built(tmp_path_factory)


def _extract(path, stage, pooling, images, prompts=None, layer=-1, batch_size=3):
    vlm = VLMEmbeddingTransformer(
        path,
        stage=stage,
        layer=layer,
        pooling=pooling,
        batch_size=batch_size,
        device="cpu",
    )
    X = (
        images
        if prompts is None
        else pd.DataFrame({"image": images, "prompt": prompts})
    )
    return vlm.fit_transform(X)


@pytest.fixture(scope="session")
def extract():
    """``extract(path, stage, pooling, images, prompts=None, layer=-1)`` -> X."""
    return _extract


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every model test runs with one torch thread (the shared fixture)."""
