"""Masked poolings against values computed by hand; padding never leaks in."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skvlm.pooling import TokenMasks, pool, pooling_label


def _masks(valid, image=None, has_cls=False):
    valid = torch.tensor(valid, dtype=torch.bool)
    image = None if image is None else torch.tensor(image, dtype=torch.bool)
    text = None if image is None else valid & ~image
    return TokenMasks(
        valid=valid, pooled=valid, image=image, text=text, has_cls=has_cls
    )


HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [100.0, 100.0]],  # right padding
        [[-100.0, -100.0], [7.0, 8.0], [9.0, 1.0], [0.0, 2.0]],  # left padding
    ]
)
VALID = [[1, 1, 1, 0], [0, 1, 1, 1]]
IMAGE = [[1, 1, 0, 0], [0, 1, 0, 0]]


@pytest.mark.parametrize(
    "pooling, expected",
    [
        ("mean", [[3.0, 4.0], [16 / 3, 11 / 3]]),
        ("max", [[5.0, 6.0], [9.0, 8.0]]),
        ("last", [[5.0, 6.0], [0.0, 2.0]]),
        ("image_mean", [[2.0, 3.0], [7.0, 8.0]]),
        ("text_mean", [[5.0, 6.0], [4.5, 1.5]]),
        (0, [[1.0, 2.0], [7.0, 8.0]]),
        (1, [[3.0, 4.0], [9.0, 1.0]]),
        (-2, [[3.0, 4.0], [9.0, 1.0]]),
    ],
)
def test_pooling_by_hand(pooling, expected):
    got = pool(HIDDEN, _masks(VALID, IMAGE), pooling)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_cls_needs_a_cls_token():
    with pytest.raises(ValueError, match="needs a CLS token"):
        pool(HIDDEN, _masks(VALID), "cls")
    assert (
        pool(HIDDEN, _masks(VALID, has_cls=True), "cls").tolist()
        == HIDDEN[:, 0].tolist()
    )


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="out of range"):
        pool(HIDDEN, _masks(VALID), 3)
    with pytest.raises(ValueError, match="not available at this stage"):
        pool(HIDDEN, _masks(VALID), "image_mean")
    with pytest.raises(ValueError, match="no tokens to average"):
        pool(HIDDEN, _masks(VALID, [[1, 1, 1, 0], [0, 1, 1, 1]]), "text_mean")
    with pytest.raises(ValueError, match="Unknown pooling"):
        pool(HIDDEN, _masks(VALID), "median")


def test_bfloat16_is_reduced_in_float32():
    hidden = HIDDEN.to(torch.bfloat16)
    assert pool(hidden, _masks(VALID), "mean").dtype == torch.float32


def test_pooling_label():
    assert pooling_label(-2) == "pos-2" and pooling_label("mean") == "mean"


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    pad=st.integers(0, 3),
    left=st.booleans(),
    pooling=st.sampled_from(["mean", "max", "last", 0, -1]),
)
def test_padding_never_changes_a_row(lengths, pad, left, pooling):
    """A row pooled alone equals the same row pooled inside a padded batch."""
    rng = np.random.default_rng(len(lengths) * 7 + pad)
    width = max(lengths) + pad
    rows = [torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32) for n in lengths]
    hidden = torch.full((len(rows), width, 3), 1e6)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        hidden[i, span] = row
        valid[i, span] = True
    batched = pool(hidden, TokenMasks(valid=valid, pooled=valid), pooling)
    for i, row in enumerate(rows):
        alone = pool(row[None], TokenMasks.full(1, len(row), "cpu"), pooling)
        # float32 sums over differently padded rows may differ in the last bit.
        np.testing.assert_allclose(
            batched[i].numpy(), alone[0].numpy(), rtol=1e-5, atol=1e-6
        )
