"""The tuner's prompt + answer rows (``skvlm.tuning._batches``)."""

from types import SimpleNamespace

import torch

from skvlm.models import Traits
from skvlm.tuning._batches import IGNORE, generation_batch


def _adapter(traits):
    # two prompts of 3 and 1 tokens, left-padded by the processor with id 0
    def prepare(images, prompts):
        return {
            "input_ids": torch.tensor([[11, 12, 13], [0, 0, 21]]),
            "attention_mask": torch.tensor([[1, 1, 1], [0, 0, 1]]),
        }

    tokenizer = SimpleNamespace(bos_token_id=7, pad_token_id=0)
    return SimpleNamespace(
        prepare=prepare, traits=traits, processor=SimpleNamespace(tokenizer=tokenizer)
    )


def test_rows_are_left_padded_with_id_0():
    batch = generation_batch(_adapter(Traits()), [None] * 2, ["a", "b"], [[5], [6, 8]])
    # 3 + 1 and 1 + 2 tokens: the second row gets one padded position
    assert batch.inputs["input_ids"].tolist() == [[11, 12, 13, 5], [0, 21, 6, 8]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    assert batch.labels.tolist() == [
        [IGNORE, IGNORE, IGNORE, 5],
        [IGNORE, IGNORE, 6, 8],
    ]


def test_train_pad_fills_the_masked_positions():
    # Gemma 3n: its pad token embeds to zeros (NaN gradients), so <bos> there
    adapter = _adapter(Traits(train_pad="bos"))
    batch = generation_batch(adapter, [None] * 2, ["a", "b"], [[5], [6, 8]])
    assert batch.inputs["input_ids"].tolist() == [[11, 12, 13, 5], [7, 21, 6, 8]]
    assert batch.inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]


def test_a_decoder_prefix_is_continued_row_by_row():
    # Pix2Struct, vision-encoder-decoder: the prompt is the decoder's prefix
    # (start token 2, then the prompt: 3 and 1 tokens, right-padded), and the
    # answer follows each row's own prefix; the encoder's inputs pass as they are
    def prepare(images, prompts):
        return {
            "pixel_values": torch.zeros(2, 3, 4, 4),
            "decoder_input_ids": torch.tensor([[2, 11, 12, 13], [2, 21, 0, 0]]),
            "decoder_attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        }

    tokenizer = SimpleNamespace(pad_token_id=0)
    adapter = SimpleNamespace(
        prepare=prepare,
        traits=Traits(),
        processor=SimpleNamespace(tokenizer=tokenizer),
        encoder_decoder=True,
        device=torch.device("cpu"),
    )
    batch = generation_batch(adapter, [None] * 2, ["a", "b"], [[5], [6, 8]])
    assert batch.inputs["decoder_input_ids"].tolist() == [
        [2, 11, 12, 13, 5],
        [2, 21, 6, 8, 0],
    ]
    assert batch.labels.tolist() == [
        [IGNORE, IGNORE, IGNORE, IGNORE, 5],
        [IGNORE, IGNORE, 6, 8, IGNORE],
    ]
    assert "decoder_attention_mask" not in batch.inputs  # causal: padding trails
    assert batch.inputs["pixel_values"].shape == (2, 3, 4, 4)
