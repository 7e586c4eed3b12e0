"""A VLM's timm convolutional tower read stage by stage (FastVLM, Gemma 3n).

FastVLM's FastViT and Gemma 3n's MobileNetV5 (a ResNet in skvlm's tiny
checkpoint) are timm models wrapped by transformers' ``TimmWrapperModel``:
hierarchies of stages that downsample and widen, each giving a
(channels, height, width) map. Their vision stage is served as the
hierarchical encoders' (:mod:`skvlm.models._encoders`): entry 0 is the input
of the first stage (the stem's output), entry k the output of stage k, each
map flattened to its H*W positions row by row, each entry with its own width;
``mean`` and ``max`` reduce over all positions.

The stages are the modules timm's own ``feature_info`` names that hold a list
of blocks (an ``nn.Sequential`` or ``nn.ModuleList``, the module itself or
one of its children): this leaves out the stem's norm or activation that
some models list first (ResNet's ``act1``, MobileNetV5's ``bn1``). Entry 0's
width is the first stage's first convolution's input channels; entry k's is
``feature_info``'s ``num_chs``.
"""

from __future__ import annotations

from torch import nn

from ._traits import TIMM_MODEL, resolve_path

__all__ = ["timm_stages"]

_LISTS = (nn.Sequential, nn.ModuleList)


def _holds_blocks(module):
    return isinstance(module, _LISTS) or any(
        isinstance(child, _LISTS) for child in module.children()
    )


def timm_stages(tower):
    """The stage modules of a timm tower and its entries' widths, or None.

    Parameters
    ----------
    tower : torch.nn.Module or None
        A VLM's vision tower; a ``TimmWrapperModel`` holds the timm model as
        ``timm_model``.

    Returns
    -------
    stages : list of torch.nn.Module or None
        The stages, in order; None when the tower is not a timm model with
        ``feature_info`` naming at least one stage.
    widths : tuple of int
        The width of every entry, 0 to ``len(stages)``.

    Examples
    --------
    >>> import torch
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem = torch.nn.Conv2d(3, 4, 2, stride=2)
    ...         self.stages = torch.nn.Sequential(
    ...             torch.nn.Sequential(torch.nn.Conv2d(4, 8, 2, stride=2))
    ...         )
    ...         self.feature_info = [
    ...             {"module": "stem", "num_chs": 4, "reduction": 2},
    ...             {"module": "stages.0", "num_chs": 8, "reduction": 4},
    ...         ]
    >>> tower = torch.nn.Module()
    >>> tower.timm_model = Tiny()
    >>> stages, widths = timm_stages(tower)
    >>> len(stages), widths
    (1, (4, 8))
    """
    model = resolve_path(tower, TIMM_MODEL) if tower is not None else None
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)):
        return None, ()
    chosen = [
        (resolve_path(model, entry["module"]), entry["num_chs"]) for entry in info
    ]
    chosen = [(m, c) for m, c in chosen if m is not None and _holds_blocks(m)]
    first = (
        next((m for m in chosen[0][0].modules() if isinstance(m, nn.Conv2d)), None)
        if chosen
        else None
    )
    if first is None:
        return None, ()
    return [m for m, _ in chosen], (first.in_channels, *(c for _, c in chosen))
