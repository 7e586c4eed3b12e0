"""GIT beyond the family matrix (test_vlm_families.py).

Its prompts hold no image token: the decoder puts the image's tokens before the
text's itself. The text is ``[CLS]`` and the prompt's words (no ``[SEP]``),
positioned from 0 in padded batches too.
"""

import pytest
import torch

from skvlm.models import load_adapter

NAME = "git"


def test_text_is_bos_and_the_prompts_words(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    tokenizer = adapter.processor.tokenizer
    batch = adapter.prepare(built.images(NAME)[:2], ["a cat", "is it a dog ?"])
    for row, prompt in zip(batch["input_ids"], ["a cat", "is it a dog ?"], strict=True):
        words = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        want = [adapter.model.config.bos_token_id, *words]
        assert row[-len(want) :].tolist() == want  # left-padded
    assert batch["position_ids"][0].tolist() == [0, 0, 0, 0, 1, 2]


def test_left_padded_rows_need_text_positions(built):
    """HF's GIT numbers a row's text from the padding on: a padded row differs
    from the prompt alone unless given positions from the attention mask."""
    adapter = load_adapter(built.path(NAME), device="cpu")
    images = built.images(NAME)[:2]
    batch = adapter.prepare(images, ["a cat", "is it a dog ?"])
    alone = adapter.prepare(images[:1], ["a cat"])
    model = adapter.model
    with torch.no_grad():
        want = model(**alone).logits[0, -1]
        given = model(**batch).logits[0, -1]
        batch.pop("position_ids")
        counted = model(**batch).logits[0, -1]
    torch.testing.assert_close(given, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(counted, want, atol=1e-3)


def test_the_image_tokens_are_the_towers(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    batch = adapter.prepare(built.images(NAME)[:2], ["a cat", "a"])
    vision = adapter.model.config.vision_config
    n_tokens = (vision.image_size // vision.patch_size) ** 2 + 1  # and a CLS
    assert [len(t) for t in adapter.image_tokens(batch)] == [n_tokens] * 2

    def read(layer, hidden, masks):
        return masks.image.sum(dim=1).tolist(), masks.text.sum(dim=1).tolist()

    with torch.no_grad():
        results, _ = adapter.capture(batch, "language", [0], read)
    # "a cat" and "a": their words, not [CLS] nor the padding
    assert results[0] == ([n_tokens] * 2, [2, 1])


def test_prompt_with_the_placeholder_after_text_says_where_it_may_go(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    assert adapter.format_prompt("<image>a cat") == "a cat"
    with pytest.raises(ValueError, match="GIT always places the image before"):
        adapter.format_prompt("a cat <image>")
