"""Token helpers shared by several family adapters (and the tuner's batches)."""

from __future__ import annotations


def valid_position_ids(mask):
    """Positions counted over the valid tokens of each row (0 at padding).

    A model that counts positions from the first column, padding included,
    reads a left-padded row as it reads the row alone with these.

    Examples
    --------
    >>> import torch
    >>> valid_position_ids(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]]))
    tensor([[0, 0, 0, 1, 2],
            [0, 1, 2, 3, 3]])
    """
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def raster_tokens(hidden):
    """A block's output as (batch, tokens, dim): a (batch, height, width, dim)
    map (SAM's windowed blocks un-partition their windows) row by row.

    Examples
    --------
    >>> import torch
    >>> raster_tokens(torch.zeros(2, 3, 4, 8)).shape
    torch.Size([2, 12, 8])
    """
    return hidden.flatten(1, -2)
