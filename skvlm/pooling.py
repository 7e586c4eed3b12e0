"""Pure functions that turn a (batch, tokens, dim) sequence into one vector per row.

Every pooling is masked: padding never leaks in, so the result of a row does not
depend on what else is in its batch. ``pooler`` is not here: it is the model's own
pooled output, which the model's adapter provides.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import torch

#: Pooling names understood somewhere in skvlm. Which ones a stage offers is up to
#: the model's adapter; an ``int`` (a token position) is accepted where noted.
POOLINGS = ("cls", "pooler", "mean", "max", "last", "image_mean", "text_mean")


@dataclass
class TokenMasks:
    """Which positions of a (batch, tokens) sequence are what.

    Attributes
    ----------
    valid : torch.Tensor of bool, shape (batch, tokens)
        Real tokens; False on padding.
    pooled : torch.Tensor of bool, shape (batch, tokens)
        The positions ``mean`` and ``max`` reduce over: patch tokens at the vision
        stage (CLS and register tokens excluded), every valid token at the
        language stage.
    image : torch.Tensor of bool or None
        Image-token positions (``image_mean``).
    text : torch.Tensor of bool or None
        Prompt-text positions, special tokens excluded (``text_mean``).
    has_cls : bool
        Whether position 0 holds a CLS token (``cls``).
    """

    valid: torch.Tensor
    pooled: torch.Tensor
    image: torch.Tensor | None = None
    text: torch.Tensor | None = None
    has_cls: bool = False

    @classmethod
    def full(cls, batch, tokens, device, *, n_prefix=0, has_cls=False):
        """Masks for an unpadded sequence whose first ``n_prefix`` tokens are special."""
        valid = torch.ones(batch, tokens, dtype=torch.bool, device=device)
        pooled = valid.clone()
        pooled[:, :n_prefix] = False
        return cls(valid=valid, pooled=pooled, has_cls=has_cls)


def is_position(pooling):
    """True when ``pooling`` is an integer token position rather than a name."""
    return isinstance(pooling, Integral) and not isinstance(pooling, bool)


def pooling_label(pooling):
    """The name of a pooling in feature names and store sites (``pos-2`` for -2)."""
    return f"pos{int(pooling)}" if is_position(pooling) else str(pooling)


def pool(hidden, masks, pooling):
    """Reduce ``hidden`` (batch, tokens, dim) to (batch, dim) with ``pooling``.

    The reduction runs in float32 whatever the model's dtype.

    Parameters
    ----------
    hidden : torch.Tensor, shape (batch, tokens, dim)
    masks : TokenMasks
    pooling : str or int
        ``cls``, ``mean``, ``max``, ``last``, ``image_mean``, ``text_mean``, or an
        int: the token at that position among the valid tokens of each row
        (negative counts from the end), so left and right padding agree.

    Returns
    -------
    vectors : torch.Tensor, shape (batch, dim), float32

    Examples
    --------
    >>> import torch
    >>> from skvlm.pooling import TokenMasks, pool
    >>> hidden = torch.arange(12.0).reshape(1, 4, 3)
    >>> masks = TokenMasks.full(1, 4, "cpu", n_prefix=1, has_cls=True)
    >>> pool(hidden, masks, "mean")
    tensor([[6., 7., 8.]])
    >>> pool(hidden, masks, "cls")
    tensor([[0., 1., 2.]])
    >>> pool(hidden, masks, -1)
    tensor([[ 9., 10., 11.]])
    """
    hidden = hidden.float()
    if is_position(pooling):
        return _position(hidden, masks.valid, int(pooling))
    if pooling == "cls":
        if not masks.has_cls:
            raise ValueError(
                "pooling 'cls' needs a CLS token, and this stage has none."
            )
        return hidden[:, 0]
    if pooling == "mean":
        return _masked_mean(hidden, masks.pooled, "mean")
    if pooling == "max":
        return _masked_max(hidden, masks.pooled)
    if pooling == "last":
        return _position(hidden, masks.valid, -1)
    if pooling == "image_mean":
        return _masked_mean(hidden, _need(masks.image, pooling), pooling)
    if pooling == "text_mean":
        return _masked_mean(hidden, _need(masks.text, pooling), pooling)
    raise ValueError(f"Unknown pooling {pooling!r}; known: {POOLINGS} or an int.")


def _need(mask, pooling):
    if mask is None:
        raise ValueError(f"pooling {pooling!r} is not available at this stage.")
    return mask


def _masked_mean(hidden, mask, name):
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        rows = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(
            f"pooling {name!r} found no tokens to average in batch rows {rows}. "
            "Check the prompt (for 'text_mean' it needs text besides the image)."
        )
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / counts.to(hidden.dtype).unsqueeze(-1)


def _masked_max(hidden, mask):
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("pooling 'max' found a row without tokens to reduce over.")
    filled = hidden.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    return filled.amax(dim=1)


def _position(hidden, valid, position):
    """The ``position``-th valid token of each row (negative from the end)."""
    counts = valid.sum(dim=1)
    target = position if position >= 0 else counts + position
    target = torch.as_tensor(target, device=hidden.device).expand_as(counts)
    if bool(((target < 0) | (target >= counts)).any()):
        raise ValueError(
            f"token position {position} is out of range for a sequence of "
            f"{int(counts.min())} tokens; use a position in "
            f"[-{int(counts.min())}, {int(counts.min()) - 1}]."
        )
    # index of the target-th True in each row: the first index whose running count
    # of valid tokens exceeds target.
    running = valid.long().cumsum(dim=1)
    index = (running <= target.unsqueeze(1)).sum(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def pad_tokens(sequences):
    """Stack per-item token sequences into one zero-padded batch with a mask.

    Families with a variable number of tokens per image (dynamic resolution,
    tiling) pool through this, so their padding is masked like any other.

    Parameters
    ----------
    sequences : sequence of torch.Tensor, each of shape (tokens_i, dim)

    Returns
    -------
    hidden : torch.Tensor, shape (batch, max tokens, dim)
        Right-padded with zeros.
    valid : torch.Tensor of bool, shape (batch, max tokens)
        True on real tokens.

    Examples
    --------
    >>> import torch
    >>> from skvlm.pooling import pad_tokens
    >>> hidden, valid = pad_tokens([torch.ones(2, 3), torch.ones(1, 3)])
    >>> tuple(hidden.shape), valid.tolist()
    ((2, 2, 3), [[True, True], [True, False]])
    """
    lengths = [len(s) for s in sequences]
    first = sequences[0]
    hidden = first.new_zeros(len(sequences), max(lengths), first.shape[-1])
    valid = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=first.device)
    for i, (sequence, length) in enumerate(zip(sequences, lengths, strict=True)):
        hidden[i, :length] = sequence
        valid[i, :length] = True
    return hidden, valid
