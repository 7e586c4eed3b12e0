"""What a model offers, before any fit: its stages, layers, poolings and widths."""

from __future__ import annotations

import os


def describe_sites(model, *, model_kwargs=None):
    """Every (stage, layer, pooling) site of a model, with its width.

    Like thingsvision's ``show_model``, for skvlm's vocabulary: the table lists
    what ``VLMEmbeddingTransformer(model, stage=, layer=, pooling=)`` accepts,
    and ``dim`` is the width of one layer's features. The model is built from
    its configuration on PyTorch's meta device, without reading its weights,
    so describing a 7B model takes seconds and no memory (a family that cannot
    be built that way is loaded on the CPU instead).

    Parameters
    ----------
    model : str or path-like
        A Hugging Face model id, a local directory or a shipped name.
    model_kwargs : dict, default=None
        As for ``VLMEmbeddingTransformer`` (``revision``, ``trust_remote_code``).

    Returns
    -------
    sites : pandas.DataFrame
        One row per site: ``stage``, ``layer`` (non-negative index), ``pooling``
        and ``dim``. ``sites.attrs`` holds ``model``, ``family``, and per
        stage the ``n_layers``, the ``auto_pooling`` (what ``"auto"`` picks) and
        ``max_position`` (the largest int position ``fit`` accepts, counting
        from 0; None when integer positions are not poolings or the bound is
        unknown).

    Examples
    --------
    >>> from skvlm.models import describe_sites
    >>> sites = describe_sites("skvlm/tiny-clip")
    >>> sites.groupby("stage", sort=False)["layer"].nunique().to_dict()
    {'vision': 4, 'projector': 1}
    >>> sites[sites.layer == 3]["pooling"].tolist()
    ['cls', 'mean', 'max', 'pooler']
    >>> sites.attrs["stages"]["vision"]
    {'n_layers': 4, 'dim': 64, 'auto_pooling': 'cls', 'max_position': 16}
    """
    import pandas as pd

    from . import max_tokens

    adapter = _skeleton(model, model_kwargs or {})
    rows, stages = [], {}
    for stage in adapter.stages:
        n_layers = adapter.n_layers(stage)
        dim = adapter.dim(stage)
        dims = adapter.dims(stage)
        for layer in range(n_layers):
            for pooling in adapter.poolings(stage, layer):
                rows.append((stage, layer, pooling, dims[layer]))
        bound = max_tokens(adapter, stage) if adapter.positions else None
        stages[stage] = {
            "n_layers": n_layers,
            "dim": dim,
            "auto_pooling": adapter.default_pooling(stage),
            "max_position": None if bound is None else bound - 1,
        }
    sites = pd.DataFrame(rows, columns=["stage", "layer", "pooling", "dim"])
    name = os.fspath(model) if isinstance(model, os.PathLike) else model
    sites.attrs.update(model=str(name), family=adapter.family, stages=stages)
    return sites


def _skeleton(model, model_kwargs):
    """The model's adapter over weights that hold shapes only (meta device)."""
    import torch
    import transformers

    from . import adapter_class, load_adapter, load_config, resolve_model

    revision = model_kwargs.get("revision")
    config = load_config(model, revision, model_kwargs)
    cls = adapter_class(config)
    path = resolve_model(model)
    try:
        auto = getattr(transformers, getattr(cls, "auto_class", "AutoModel"))
        trust = bool(model_kwargs.get("trust_remote_code", False))
        with torch.device("meta"):
            net = auto.from_config(config, trust_remote_code=trust)
        processor = cls.load_processor(
            path, revision=revision, model_kwargs=model_kwargs
        )
        return cls(net.eval(), processor)
    except Exception:  # a family that needs real weights to be built
        return load_adapter(model, device="cpu", model_kwargs=model_kwargs)
