"""Kosmos-2 and Kosmos-2.5 beyond the family matrix (test_vlm_families.py).

Its prompts hold no image token id: the processor puts the image in front and
marks its positions in ``image_embeds_position_mask``. A prompt may open with
the ``<image>`` placeholder, never hold it elsewhere.
"""

import pytest

from skvlm.models import load_adapter

NAME = "kosmos-2"


def test_image_positions_are_the_processors_mask(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    batch = adapter.prepare(built.images(NAME)[:2], ["a cat", "is it a dog ?"])
    mask = batch["image_embeds_position_mask"].bool()
    assert adapter.image_positions(batch).equal(mask)
    # the tiny model's latent_query_num image positions per prompt
    n_queries = adapter.model.config.latent_query_num
    assert adapter.image_positions(batch).sum(dim=1).tolist() == [n_queries] * 2


def test_prompt_with_the_placeholder_after_text_says_where_it_may_go(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    assert adapter.format_prompt("<image>a cat") == "a cat"
    with pytest.raises(ValueError, match="may only open it"):
        adapter.format_prompt("a cat <image>")


def test_kosmos2_5_saved_max_patches_and_marker_positions(built):
    """Its processor's call would use 4096 patches, not the saved 16; its mask
    marks <image> and </image> with -1, which are no image positions."""
    adapter = load_adapter(built.path("kosmos-2.5"), device="cpu")
    batch = adapter.prepare(built.images("kosmos-2.5")[:2], ["a cat", "is it a dog ?"])
    assert batch["flattened_patches"].shape[1] == 16
    mask = batch["image_embeds_position_mask"]
    assert (mask == -1).sum(dim=1).tolist() == [2, 2]
    assert adapter.image_positions(batch).equal(mask == 1)
    n_queries = adapter.model.config.latent_query_num
    assert adapter.image_positions(batch).sum(dim=1).tolist() == [n_queries] * 2
