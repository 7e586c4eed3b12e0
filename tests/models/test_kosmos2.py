"""Kosmos-2: what is special to it beyond the family matrix (test_vlm_families.py).

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
