"""Module sites: the output of any named module, read by a forward hook and pooled.

A module site is read during the forward pass of a stage (whose preprocessing,
prompt and token masks it shares), from the first call of the module in that
pass. A tuple output gives its element 0 (as HF's blocks return ``(hidden,
...)``); a model output object gives ``last_hidden_state``. An output of one
vector per token (batch, tokens, dim) is pooled with the stage's masks, like the
stage's own hidden states; one vector per item (batch, dim) is taken as it is.
"""

from __future__ import annotations

import fnmatch
import threading

import torch

from ..pooling import pool

__all__ = ["capture_modules", "describe_modules", "match_modules"]


class _StopModules(Exception):
    """Raised by a hook once every requested module has been read."""


def match_modules(model, pattern):
    """Names of ``model``'s modules that match a glob, in ``named_modules()`` order.

    Parameters
    ----------
    model : torch.nn.Module
    pattern : str or list of str
        ``fnmatch`` globs over the dotted names of ``named_modules()`` (``*``
        matches dots too: ``"*.layers.1.mlp"``). A list matches any of them.

    Returns
    -------
    list of str

    Examples
    --------
    >>> import torch
    >>> from skvlm.models import match_modules
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    >>> match_modules(net, "*")
    ['0', '1']
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    names = [name for name, _ in model.named_modules() if name]
    found = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not found:
        near = [n for n in names if any(p.strip("*.") in n for p in patterns)][:8]
        hint = f" Names containing it: {near}." if near else ""
        raise ValueError(
            f"module={pattern!r} matches none of the model's {len(names)} modules "
            f"(e.g. {names[:4]}).{hint} List them with `skvlm sites MODEL "
            "--modules`; the pattern is a glob over their dotted names."
        )
    return found


def _output_tensor(name, output):
    if isinstance(output, torch.Tensor):
        return output
    if (
        isinstance(output, (tuple, list))
        and output
        and isinstance(output[0], torch.Tensor)
    ):
        return output[0]
    if getattr(output, "last_hidden_state", None) is not None:
        return output.last_hidden_state
    raise TypeError(
        f"module {name!r} returns a {type(output).__name__}, with no tensor to read "
        "(a tensor, a tuple whose element 0 is one, or a model output with "
        "last_hidden_state); pick another module."
    )


def _masks_for(name, stack, hidden):
    masks = stack.masks(hidden) if callable(stack.masks) else stack.masks
    if tuple(masks.valid.shape) != tuple(hidden.shape[:2]):
        raise ValueError(
            f"module {name!r} outputs {tuple(hidden.shape)}, whose tokens are not "
            f"the stage's sequence {tuple(masks.valid.shape)}, so a token pooling "
            "cannot be masked. Pick the stage the module belongs to (stage=...), "
            "or a module whose output is one vector per token of that stage."
        )
    return masks


def capture_modules(adapter, batch, stage, names, poolings):
    """Pool the outputs of named modules during one forward pass of ``stage``.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
    batch : dict
        What ``adapter.prepare`` returned.
    stage : str
        The pass to run (its masks pool the modules' token outputs).
    names : sequence of str
        Module names (:func:`match_modules`).
    poolings : sequence of str or int
        Poolings applied to each module's output.

    Returns
    -------
    dict
        ``{(name, pooling): float32 tensor (batch, dim)}``. The pass stops once
        every module has been read.
    """
    modules = dict(adapter.model.named_modules())
    stack = adapter.stack(stage, batch)
    owner = threading.get_ident()
    stop = _StopModules()
    results = {}
    size = {}

    def reader(name):
        def hook(module, args, output):
            if threading.get_ident() != owner or name in size:
                return  # another thread's pass, or a later call of the module
            hidden = _output_tensor(name, output)
            size[name] = tuple(hidden.shape)
            if hidden.ndim == 2:
                vectors = {p: hidden.float() for p in poolings}
            elif hidden.ndim == 3:
                masks = _masks_for(name, stack, hidden)
                vectors = {p: pool(hidden, masks, p) for p in poolings}
            else:
                raise ValueError(
                    f"module {name!r} outputs shape {tuple(hidden.shape)}; a module "
                    "site needs (batch, dim) or (batch, tokens, dim)."
                )
            for p, v in vectors.items():
                results[(name, p)] = v.detach()
            if len(size) == len(names):
                raise stop

        return hook

    handles = [modules[name].register_forward_hook(reader(name)) for name in names]
    try:
        adapter.forward(stage, batch)
    except _StopModules as exc:
        if exc is not stop:
            raise
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in size]
    if missing:
        raise ValueError(
            f"modules {missing} did not run in the forward pass of stage {stage!r} "
            f"of the {adapter.family} model; pick the stage whose pass runs them "
            "(stage='vision', 'projector' or 'language')."
        )
    n = next(iter(results.values())).shape[0]
    wrong = [k[0] for k, v in results.items() if v.shape[0] != n]
    if wrong:
        raise ValueError(
            f"module {wrong[0]!r} outputs {size[wrong[0]]}, whose first axis is not "
            f"the batch ({n} items); it cannot be a module site."
        )
    return results


def describe_modules(model, pattern="*", *, model_kwargs=None):
    """The named modules of a model, for ``VLMEmbeddingTransformer(module=...)``.

    The model is built on PyTorch's meta device from its configuration, as
    :func:`skvlm.models.describe_sites` does: no weight is read.

    Parameters
    ----------
    model : str or path-like
        A Hugging Face model id, a local directory or a shipped name.
    pattern : str, default="*"
        A glob over the dotted module names.
    model_kwargs : dict, default=None
        ``revision``, ``trust_remote_code``.

    Returns
    -------
    modules : pandas.DataFrame
        One row per matching module: ``module`` (its name) and ``type`` (its
        class).

    Examples
    --------
    >>> from skvlm.models import describe_modules
    >>> mods = describe_modules("skvlm/tiny-clip", "vision_model.*.layers.0.*")
    >>> mods.head(2).to_dict("records")
    [{'module': 'vision_model.encoder.layers.0.self_attn', 'type': 'CLIPAttention'}, {'module': 'vision_model.encoder.layers.0.self_attn.k_proj', 'type': 'Linear'}]
    """
    import pandas as pd

    from ._describe import _skeleton

    net = _skeleton(model, model_kwargs or {}).model
    names = match_modules(net, pattern)
    modules = dict(net.named_modules())
    return pd.DataFrame(
        [(name, type(modules[name]).__name__) for name in names],
        columns=["module", "type"],
    )
