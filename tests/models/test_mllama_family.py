"""Mllama (Llama 3.2 Vision): what the lean family matrix leaves out.

``test_vlm_families.py`` compares layers 0, 1 and -1 of every stage with HF
at batch sizes 1 and 4. Here: every vision entry (local and global encoder
layers), the cross-attention decoder block's entry, and the tuner's prompt +
answer rows, whose ``cross_attention_mask`` must follow the tokens.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers.models.mllama.modeling_mllama import (
    MllamaCrossAttentionDecoderLayer,
)

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.tuning._batches import answer_ids, generation_batch

from ._references import expected

NAME = "mllama"


@pytest.fixture(scope="module")
def adapter(built):
    return load_adapter(built.path(NAME), device="cpu")


def _extract(adapter, images, prompts, stage, requests):
    with torch.inference_mode():
        batch = adapter.prepare(images, prompts)
        return {
            k: v.numpy() for k, v in adapter.extract(batch, stage, requests).items()
        }


def test_every_vision_entry_of_both_encoders_equals_hf(built, adapter):
    config = adapter.model.config.vision_config
    n = config.num_hidden_layers + config.num_global_layers + 1
    assert adapter.n_layers("vision") == n
    examples = built.reference(NAME)
    assert sorted({ex.facts["tiles"] for ex in examples}) == [1, 2]
    # -17: the last tile's CLS (17 tokens a tile)
    requests = [(k, p) for k in range(n) for p in ("mean", "max", "cls", 5, -17)]
    got = _extract(adapter, built.images(NAME), built.prompts(NAME), "vision", requests)
    for layer, pooling in requests:
        np.testing.assert_allclose(
            got[(layer, pooling)],
            expected(examples, "vision", [layer], pooling),
            atol=1e-5,
            err_msg=f"entry {layer} {pooling}",
        )


def test_the_cross_attention_block_is_an_entry_and_reads_the_image(built, adapter):
    # block 1 is the cross-attention block: entry 2 is its output. With the
    # same prompt, entries 0 and 1 cannot depend on the image; entry 2 does.
    (block,) = adapter.model.config.text_config.cross_attention_layers
    assert isinstance(adapter.language.layers[block], MllamaCrossAttentionDecoderLayer)
    entry = block + 1
    examples = built.reference(NAME)
    images, prompts = built.images(NAME), built.prompts(NAME)
    poolings = ("last", "mean", "text_mean", "image_mean")
    requests = [(entry, p) for p in poolings]
    got = _extract(adapter, images, prompts, "language", requests)
    for pooling in poolings:
        np.testing.assert_allclose(
            got[(entry, pooling)],
            expected(examples, "language", [entry], pooling),
            atol=1e-5,
            err_msg=pooling,
        )
    vlm = VLMEmbeddingTransformer(
        built.path(NAME), stage="language", pooling="mean", device="cpu"
    )
    X = pd.DataFrame({"image": images[:2], "prompt": [prompts[0]] * 2})
    for layer, same in ((0, True), (block, True), (entry, False)):
        rows = vlm.set_params(layer=layer).fit_transform(X)
        assert np.allclose(rows[0], rows[1]) is same, layer


def test_training_rows_carry_the_cross_attention_mask_over_the_answer(built, adapter):
    # Left-padded prompt + answer rows give each answer token HF's logits for
    # that row alone, its cross_attention_mask extended as HF's generate does
    # (each new token reads the tiles the last prompt token reads).
    hf = built.hf(NAME)
    images = built.images(NAME)[:2]  # 1 and 2 tiles
    texts = [adapter.format_prompt(p) for p in ("a cat", "describe the object .")]
    answers = answer_ids(adapter.processor.tokenizer, ["red car", "cat"])
    batch = generation_batch(adapter, images, texts, answers)
    assert batch.inputs["cross_attention_mask"].shape[1] == batch.labels.shape[1]
    with torch.no_grad():
        logits = adapter.model(**batch.inputs, use_cache=False).logits
        for i, (image, text, answer) in enumerate(
            zip(images, texts, answers, strict=True)
        ):
            alone = dict(
                hf.processor(images=[[image]], text=[text], return_tensors="pt")
            )
            n = alone["input_ids"].shape[1]
            extra = torch.tensor([answer])
            alone["input_ids"] = torch.cat([alone["input_ids"], extra], dim=1)
            alone["attention_mask"] = torch.ones_like(alone["input_ids"])
            mask = alone["cross_attention_mask"]
            alone["cross_attention_mask"] = torch.cat(
                [mask, mask[:, -1:].expand(-1, len(answer), -1, -1)], dim=1
            )
            want = hf.model(**alone, use_cache=False).logits[0, n - 1 : -1]
            got = logits[i, -len(answer) - 1 : -1]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_vision_stops_early_and_neither_tower_stage_runs_the_language_model(
    built, adapter
):
    model = adapter.model
    tower = model.model.vision_model
    ran, language = [], []
    blocks = [*tower.transformer.layers, *tower.global_transformer.layers]
    handles = [
        block.register_forward_hook(lambda *args, i=i: ran.append(i))
        for i, block in enumerate(blocks)
    ]
    handles.append(
        adapter.language.register_forward_pre_hook(lambda *a: language.append(1))
    )
    images, prompts = built.images(NAME)[:2], built.prompts(NAME)[:2]
    try:
        _extract(adapter, images, prompts, "vision", [(1, "mean")])
        assert ran == [0]  # entry 1: the first local layer only
        ran.clear()
        _extract(adapter, images, prompts, "projector", [(0, "mean")])
        assert ran == list(range(len(blocks)))
    finally:
        for handle in handles:
            handle.remove()
    assert language == []
