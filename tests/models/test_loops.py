"""A decoder loop's language stage: one entry per block execution, as HF's.

Inkling 2 loop runs its loop blocks ``loop_num_passes`` times per pass; HF's
own ``hidden_states`` hold one entry per block execution. The capture protocol
over :func:`skvlm.models._loops.block_executions` must give every one of them
(the loop blocks' passes included, which the family matrix's layers 0, 1 and
-1 do not reach), for a padded batch too. The model loads without its
processor (torchvision-only), so this runs in any world.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from skvlm.models._base import Adapter, Stack
from skvlm.models._loops import Execution, block_executions
from skvlm.models._traits import final_norm
from skvlm.pooling import TokenMasks


class _LanguageOnly(Adapter):
    """The capture protocol over a language model's block executions."""

    family = "loop"

    def __init__(self, language):
        super().__init__(language, None)
        self.blocks = block_executions(language.layers, language.config)

    def stack(self, stage, batch):
        mask = batch["attention_mask"].bool()
        return Stack(
            blocks=self.blocks,
            masks=TokenMasks(valid=mask, pooled=mask),
            final_norm=final_norm(self.model),
        )

    def forward(self, stage, batch):
        return self.model(**batch, use_cache=False)


@pytest.fixture(scope="module")
def language(tmp_path_factory):
    from skvlm.testing import TINY_MODELS

    path = TINY_MODELS["inkling2_loop"].build(tmp_path_factory.mktemp("loop"))
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    return model.model.language_model


def test_one_entry_per_block_execution_equals_hf(language):
    config = language.config
    passes = config.loop_num_passes
    loop = config.loop_layer_index_end - config.loop_layer_index_start
    assert passes > 1 and loop > 0
    adapter = _LanguageOnly(language)
    assert len(adapter.blocks) == config.num_hidden_layers + (passes - 1) * loop
    ids = torch.randint(
        3, config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0)
    )
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    batch = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        hf = language(**batch, output_hidden_states=True, use_cache=False).hidden_states
        entries = range(len(adapter.blocks) + 1)
        got, _ = adapter.capture(batch, "language", entries, lambda k, h, m: h.clone())
    assert len(hf) == len(adapter.blocks) + 1  # HF counts block executions
    for k in entries:
        np.testing.assert_allclose(got[k].numpy(), hf[k].numpy(), atol=1e-6, err_msg=k)
    # the loop's passes differ: each pass is an entry of its own
    first = config.loop_layer_index_start + 1
    assert not torch.allclose(got[first], got[first + loop])


def test_a_decoder_without_loop_keeps_its_blocks():
    blocks = [torch.nn.Identity(), torch.nn.Identity()]
    assert block_executions(blocks, object()) is blocks


def test_an_execution_fires_on_its_call_only():
    module = torch.nn.Identity()
    seen = []
    hooks = [
        Execution(module, 1).register_forward_pre_hook(
            lambda m, args: seen.append(("pre", float(args[0])))
        ),
        Execution(module, 2).register_forward_hook(
            lambda m, args, out: seen.append(("post", float(out)))
        ),
    ]
    for x in range(4):
        module(torch.tensor(float(x)))
    for hook in hooks:
        hook.remove()
    module(torch.tensor(9.0))
    assert seen == [("pre", 1.0), ("post", 2.0)]
