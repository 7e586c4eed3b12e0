"""The tiny IDEFICS (v1) checkpoint holds what a real one does: the image
tokens in the decoupled embedding's additional rows, and open cross-attention
gates (transformers initialises them at zero, which would hide the image)."""

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from skvlm.testing import make_tiny_idefics, random_images


def test_tiny_idefics_image_tokens_gates_and_image_effect(tmp_path):
    path = make_tiny_idefics(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "IdeficsForVisionText2Text"
    ids = processor.tokenizer.convert_tokens_to_ids(
        ["<fake_token_around_image>", "<image>"]
    )
    config = model.config
    assert sorted(ids) == [config.vocab_size, config.vocab_size + 1]
    assert config.additional_vocab_size == 2
    gates = {
        name: param
        for name, param in model.named_parameters()
        if name.rsplit(".", 1)[-1].startswith("alpha_")
    }
    assert len(gates) == 2 * len(model.model.gated_cross_attn_layers) == 4
    assert all(bool((g.abs() >= 0.5).all()) for g in gates.values())
    # the image reaches the language model: two images, two outputs
    logits = []
    for image in random_images(2, seed=0):
        inputs = processor(text=[["User:", image, "a cat"]], return_tensors="pt")
        with torch.no_grad():
            logits.append(model(**inputs).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)
