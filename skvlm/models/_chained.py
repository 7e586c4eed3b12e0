"""Vision towers of several encoders run one after the other, read as one stack.

DeepSeek-OCR-2's and Unlimited-OCR's towers run a SAM encoder over the image,
then a second encoder over SAM's (neck-projected) tokens: DeepSeek-OCR-2's
a decoder-style encoder whose learned queries follow SAM's tokens (their
outputs are the tower's), Unlimited-OCR's a CLIP encoder with a class token.
HF's ``hidden_states`` of such a tower are the second encoder's only; the
family declares its encoders' block lists as a tuple
(``Traits.vision_blocks``), and the generic adapter reads them as one
stack, in one layer index space:

- entry 0: the input of SAM's first block (patch embeddings plus positions);
- entries 1 to S: the outputs of SAM's S blocks, each (height, width,
  channels) map row by row (HF's SAM ``hidden_states`` end with its neck's
  output instead of its last block's; entry S is the last block's);
- entries S + 1 to S + E: the outputs of the second encoder's E blocks (the
  tower's own ``hidden_states[1:]``), the last one after the encoder's final
  norm where it has one (DeepSeek-OCR-2), as HF's last entry is.

The second encoder's input (SAM's neck output with the queries or class
token) is no entry. Entries differ in token count (SAM's patches; the second
encoder's tokens: SAM's merged tokens and the learned queries, or a class
token and the patches) and may differ in width: ``mean`` and ``max`` pool
every token of the entry. The tower runs on each image's global view.
"""

from __future__ import annotations

from torch import nn

from ..pooling import TokenMasks
from ._base import Stack
from ._traits import final_norm, resolve_path

__all__ = ["block_width", "chained_stack", "chained_tower"]


def block_width(block):
    """The width of a pre-norm block's input: its first norm's size, or None.

    Examples
    --------
    >>> import torch
    >>> from skvlm.models._chained import block_width
    >>> block = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
    >>> block_width(block)
    8
    """
    for module in block.modules():
        if "norm" not in type(module).__name__.lower():
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() == 1:
            return int(weight.shape[0])
    return None


def chained_tower(tower, paths):
    """The blocks, entry widths and final norm of a tower of chained encoders.

    Parameters
    ----------
    tower : torch.nn.Module
    paths : tuple of str
        The block lists' paths under ``tower``, in the order they run.

    Returns
    -------
    blocks : list of torch.nn.Module or None
        Every block, in order (None when a list or a width is missing).
    widths : tuple of int
        Each entry's width: entry 0 and each block's output.
    norm : torch.nn.Module or None
        The last encoder's final norm (the module holding the last list).
    """
    lists = [resolve_path(tower, path) for path in paths]
    if any(blocks is None or len(blocks) == 0 for blocks in lists):
        return None, (), None
    widths = [block_width(blocks[0]) for blocks in lists]
    if any(width is None for width in widths):
        return None, (), None
    entries = [widths[0]]
    for blocks, width in zip(lists, widths, strict=True):
        entries += [width] * len(blocks)
    holder = paths[-1].rpartition(".")[0]
    parent = resolve_path(tower, holder) if holder else tower
    return [b for blocks in lists for b in blocks], tuple(entries), final_norm(parent)


def _tokens(hidden):
    """A (batch, height, width, channels) map row by row; tokens as given."""
    return hidden.flatten(1, -2)


def chained_stack(blocks, norm):
    """The :class:`Stack` of a chained tower (masks: per entry, all tokens)."""

    def masks(hidden):
        return TokenMasks.full(hidden.shape[0], hidden.shape[1], hidden.device)

    return Stack(
        blocks=blocks, masks=masks, final_norm=norm, unpack=_tokens, entry_masks=True
    )
