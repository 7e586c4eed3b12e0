"""Packed towers in the generic adapter: the layout, and what is refused.

The vision stage of every packed family is compared with HF's own states in
``test_vlm_families.py`` (rows in ``_families_claimed.py``); here, the index
that reorders a packed sequence against orders written out by hand, the
test images against windows (so that the window permutation is exercised),
and the refusal of a packed tower that cannot be split per image.
"""

import re
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from skvlm import VLMEmbeddingTransformer
from skvlm._transformers_compat import vision_window_index
from skvlm.models import (
    TRAITS,
    Traits,
    clear_model_cache,
    load_adapter,
    support_matrix,
)
from skvlm.models._packed import _merge_scale, raster_gather
from skvlm.testing import TINY_MODELS

from ._families import NEEDS_TORCHVISION
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


def test_raster_order_undoes_windows_of_single_patches():
    # Muse Glimmer: the processor packs a 2 x 3 grid row by row (merge 1) and
    # the tower (spatial_merge_size 1) permutes single patches into 2 x 2
    # windows: window 0 = patches 0, 1, 3, 4; window 1 = patches 2, 5
    window = torch.tensor([0, 1, 3, 4, 2, 5])
    gather, _, _ = raster_gather(torch.tensor([[1, 2, 3]]), [1], window=window, unit=1)
    assert gather.tolist() == [0, 1, 4, 2, 3, 5]


def test_the_window_unit_is_the_towers_not_the_packing():
    # merge blocks of 2 x 2 packed contiguously, and a tower permuting single
    # patches: packed patch j holds processor patch window[j]
    window = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    gather, _, _ = raster_gather(torch.tensor([[1, 2, 4]]), [2], window=window, unit=1)
    # raster (0,0) is processor patch 0, now at 4; (0,2) is processor patch 4, at 0
    assert gather.tolist() == [4, 5, 0, 1, 6, 7, 2, 3]
    # the same permutation read in units of merge blocks moves whole blocks
    blocks, _, _ = raster_gather(
        torch.tensor([[1, 2, 8]]), [2], window=torch.tensor([1, 0, 3, 2])
    )
    assert blocks.tolist() == [4, 5, 0, 1, 12, 13, 8, 9, 6, 7, 2, 3, 14, 15, 10, 11]


def test_transformers_windows_of_single_patches():
    # a tower of spatial_merge_size 1 and 2 x 2-patch windows (16 px of 8 px
    # patches), as Muse Glimmer's: transformers' own window index
    tower = SimpleNamespace(spatial_merge_size=1, window_size=16, patch_size=8)
    window = vision_window_index(tower, torch.tensor([[1, 2, 3]]))
    assert window.tolist() == [0, 1, 3, 4, 2, 5]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name, marks=(NEEDS_TORCHVISION,) if TINY_MODELS[name].torchvision else ()
        )
        for name in sorted(WINDOWED)
    ],
)
def test_the_test_images_exceed_a_window(built, name):
    # otherwise the window permutation is the identity and goes untested
    facts = [example.facts for example in built.reference(name)]
    assert any(f["permuted"] for f in facts)


def test_a_packed_tower_without_grid_is_refused(built, monkeypatch):
    # Declared packed, a tower whose get_image_features takes no *grid_thw
    # cannot be split per image: the matrix says so for a claimed type
    # (Apertus 1.5 takes image_sizes), and loading refuses the stage, naming
    # the family, the stage and the same reason (Aria, which has a tiny model).
    # (Apertus 1.5's own refusal, of its VQ tokenizer, set aside)
    for name in ("apertus1p5", "aria"):
        declared = replace(TRAITS.get(name, Traits()), views="packed", unsupported={})
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


# MiniCPM-V: every view of every image packed, and a merger between blocks
MINICPM = ["minicpmv4_6", "minicpmv4_7"]


def test_merge_scale_of_an_entry():
    grid = torch.tensor([[1, 4, 4], [1, 8, 4]])  # 48 patches
    assert _merge_scale(grid, 12) == 2  # every view's grid halved
    assert _merge_scale(grid, 3) == 4
    assert _merge_scale(grid, 48) is None  # not merged
    assert _merge_scale(grid, 10) is None
    assert _merge_scale(torch.tensor([[1, 2, 6]]), 3) == 2
    assert _merge_scale(torch.tensor([[1, 3, 4]]), 3) is None  # 3 rows: no halves


@pytest.mark.parametrize("name", MINICPM)
def test_the_test_images_have_views_and_merged_entries(built, name):
    # otherwise the view split and the merged grid go untested
    examples = built.reference(name)
    assert max(example.facts["views"] for example in examples) > 1
    states = examples[0].stages["vision"].states
    assert 4 * len(states[-1]) == len(states[0])


def test_views_that_do_not_make_up_the_images_are_refused(built):
    adapter = load_adapter(built.path("minicpmv4_6"), device="cpu")
    images = built.images("minicpmv4_6")
    batch = dict(adapter.prepare(images, ["a"] * len(images)))
    batch["target_sizes"] = batch["target_sizes"][:-1]  # one view too few
    with pytest.raises(ValueError, match=r"minicpmv4_6: stage 'vision'.*views do not"):
        adapter.extract(batch, "vision", [(0, "mean")])
