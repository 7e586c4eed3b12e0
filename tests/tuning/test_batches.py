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
