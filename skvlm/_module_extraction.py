"""Module sites through the one extraction path: batches, store, namespace.

:class:`ModuleExtraction` is an :class:`~skvlm._extraction.Extraction` whose
"layers" are the matched modules, in order: entry ``i`` is module ``modules[i]``.
Its store namespace hashes the stage's namespace and the module names, so a
module's vectors are never served for a stage layer or another module.
"""

from __future__ import annotations

import hashlib
import json

from PIL import Image

from ._extraction import Extraction
from .models import capture_modules, match_modules

__all__ = ["ModuleExtraction"]


class ModuleExtraction(Extraction):
    """Images in, the pooled outputs of named modules out.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
    stage : str
        The forward pass that runs the modules (and whose masks pool them).
    modules : list of str
        Module names (``skvlm.models.match_modules``).
    widths : list of int, default=None
        Each module's output width; None measures them with one pass on a
        blank image (:meth:`measure_widths`).
    **kwargs
        As for :class:`~skvlm._extraction.Extraction`.
    """

    def __init__(self, adapter, stage, modules, *, widths=None, **kwargs):
        super().__init__(adapter, stage, **kwargs)
        self.modules = list(modules)
        self.module_widths = (
            list(widths) if widths is not None else self.measure_widths()
        )

    @classmethod
    def from_params(cls, params, widths=None, estimator=None):
        """The module extraction a ``VLMEmbeddingTransformer``'s params describe."""
        base = Extraction.from_params(params, estimator=estimator)
        modules = match_modules(base.adapter.model, params["module"])
        return cls(
            base.adapter,
            base.stage,
            modules,
            widths=widths,
            prompt=base.prompt,
            batch_size=base.batch_size,
            on_error=base.on_error,
            verbose=base.verbose,
            n_workers=base.n_workers,
            callbacks=base.callbacks,
            estimator=estimator,
            image_aspect=base.image_aspect,
        )

    def measure_widths(self):
        """Each module's output width, from one pass on a blank 32-pixel image."""
        import torch

        image = Image.new("RGB", (32, 32))
        prompts = [self.prompt] if self.reads_prompt else None
        batch = self.adapter.prepare([image], prompts)
        with torch.inference_mode():
            out = capture_modules(self.adapter, batch, self.stage, self.modules, [0])
        return [int(out[(name, 0)].shape[-1]) for name in self.modules]

    @property
    def n_layers(self):
        return len(self.modules)

    @property
    def dim(self):
        return max(self.module_widths)

    def widths(self, layers):
        return [self.module_widths[i] for i in layers]

    def all_requests(self, position=None):
        """Every module with the stage's named poolings (its own 'pooler' aside)."""
        last = self.adapter.n_layers(self.stage) - 1
        names = [p for p in self.adapter.poolings(self.stage, last) if p != "pooler"]
        requests = [(i, p) for i in range(len(self.modules)) for p in names]
        if position is not None and not isinstance(position, str):
            requests += [(i, int(position)) for i in range(len(self.modules))]
        return requests

    def namespace(self, row_prompts=None):
        space, meta = super().namespace(row_prompts)
        meta = {**meta, "modules": self.modules}
        blob = json.dumps([space, self.modules]).encode()
        return hashlib.sha1(blob).hexdigest(), meta

    def extract(self, batch, requests):
        layers = sorted({layer for layer, _ in requests})
        poolings = list(dict.fromkeys(p for _, p in requests))
        names = [self.modules[i] for i in layers]
        out = capture_modules(self.adapter, batch, self.stage, names, poolings)
        return {(i, p): out[(self.modules[i], p)] for i, p in requests}
