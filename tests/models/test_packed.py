"""Packed towers in the generic adapter: the layout, and what is refused.

The vision stage of every packed family is compared with HF's own states in
``test_vlm_families.py`` (rows in ``_families_claimed.py``); here, the index
that reorders a packed sequence against orders written out by hand, the
test images against windows (so that the window permutation is exercised),
and the refusal of a packed tower that cannot be split per image.
"""

import re
from dataclasses import replace

import pandas as pd
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm.models import TRAITS, Traits, clear_model_cache, support_matrix
from skvlm.models._packed import raster_gather

from ._families_claimed import WINDOWED


def test_raster_order_of_merge_blocks():
    # a 2 x 4 patch grid packed as two 2 x 2 merge blocks:
    # block (0, 0) = patches (0,0) (0,1) (1,0) (1,1) at 0..3, block (0, 1) at 4..7
    gather, lengths, patch = raster_gather(torch.tensor([[1, 2, 4]]), [2])
    assert gather.tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert lengths == [8]
    assert patch.all()


def test_raster_order_of_rows_and_class_tokens():
    # merge 1 (row by row already), a class token before each image's patches
    grid = torch.tensor([[1, 2, 2], [1, 1, 3]])
    gather, lengths, patch = raster_gather(grid, [1, 1], n_prefix=1)
    assert gather.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert lengths == [5, 4]
    assert patch.tolist() == [False, True, True, True, True, False, True, True, True]


def test_raster_order_undoes_windows():
    # the blocks see merge block 1 first: packed block 0 holds processor block 1
    gather, _, _ = raster_gather(
        torch.tensor([[1, 2, 4]]), [2], window=torch.tensor([1, 0])
    )
    assert gather.tolist() == [4, 5, 0, 1, 6, 7, 2, 3]


def test_per_image_merge_sizes():
    # VideoLLaMA3: each image its own merge size
    grid = torch.tensor([[1, 2, 4], [1, 2, 2]])
    gather, lengths, _ = raster_gather(grid, [2, 1])
    assert gather.tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11]
    assert lengths == [8, 4]


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_the_test_images_exceed_a_window(built, name):
    # otherwise the window permutation is the identity and goes untested
    facts = [example.facts for example in built.reference(name)]
    assert any(f["permuted"] for f in facts)


def test_a_packed_tower_without_grid_is_refused(built, monkeypatch):
    # Declared packed, a tower whose get_image_features takes no *grid_thw
    # cannot be split per image: the matrix says so for a claimed type
    # (Apertus 1.5 takes image_sizes), and loading refuses the stage, naming
    # the family, the stage and the same reason (Aria, which has a tiny model).
    for name in ("apertus1p5", "aria"):
        declared = replace(TRAITS.get(name, Traits()), views="packed")
        monkeypatch.setitem(TRAITS, name, declared)
    reason = support_matrix().set_index("model_type").loc["apertus1p5", "vision"]
    assert reason.startswith("unsupported: ") and "grid_thw" in reason
    clear_model_cache()  # the adapter reads its traits when it loads
    try:
        vlm = VLMEmbeddingTransformer(built.path("aria"), stage="vision", device="cpu")
        message = re.escape(reason.removeprefix("unsupported: "))
        with pytest.raises(ValueError, match=rf"stage='vision'.*aria.*{message}"):
            vlm.fit_transform(pd.Series(built.images("aria")))
    finally:
        clear_model_cache()
