"""A tower of chained encoders (SAM, then a second encoder) read as one stack.

DeepSeek-OCR-2's vision stage: SAM's entries then the second encoder's
blocks', one layer index space. The family matrix checks layers 0, 1 and -1;
here every layer is compared with HF's own states (SAM's module called alone,
and the tower's ``hidden_states``: :mod:`._references_towers2`), the widths
and the index space the docs give (SAM's S + 1 entries, then E).
"""

import numpy as np
import torch

from skvlm.models import load_adapter

from ._references import expected


def test_every_layer_of_both_encoders_equals_hf(built):
    name = "deepseek_ocr2"
    adapter = load_adapter(built.path(name), device="cpu")
    examples = built.reference(name)
    states = examples[0].stages["vision"].states
    tower = adapter.tower
    n_sam = len(tower.sam_encoder.layers)
    n_second = len(tower.vision_encoder.layers)
    assert adapter.n_layers("vision") == len(states) == n_sam + 1 + n_second
    assert examples[0].facts["sam_entries"] == n_sam + 1
    assert adapter.dims("vision") == tuple(s.shape[1] for s in states)
    # SAM's entries hold its patches; the second encoder's, its tokens and queries
    assert len(states[n_sam]) != len(states[n_sam + 1])
    images, prompts = built.images(name), built.prompts(name)
    layers = range(len(states))
    requests = [(k, p) for k in layers for p in ("mean", 13)]
    with torch.inference_mode():
        got = adapter.extract(adapter.prepare(images, prompts), "vision", requests)
    for layer, pooling in requests:
        np.testing.assert_allclose(
            got[(layer, pooling)].numpy(),
            expected(examples, "vision", [layer], pooling),
            atol=1e-5,
            rtol=1e-6,
            err_msg=f"{layer} {pooling}",
        )


def test_widths_and_final_norm_are_read_off_the_encoders():
    from torch import nn

    from skvlm.models._chained import chained_tower

    def block(width):
        return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))

    tower = nn.Module()
    tower.first = nn.Module()
    tower.first.layers = nn.ModuleList([block(8), block(8)])
    tower.second = nn.Module()
    tower.second.layers = nn.ModuleList([block(12)])
    tower.second.norm = nn.LayerNorm(12)
    blocks, widths, norm = chained_tower(tower, ("first.layers", "second.layers"))
    assert len(blocks) == 3 and widths == (8, 8, 8, 12)
    assert norm is tower.second.norm
    # no norm beside the last list; a missing list: not a chained tower
    del tower.second.norm
    assert chained_tower(tower, ("first.layers", "second.layers"))[2] is None
    assert chained_tower(tower, ("first.layers", "third.layers")) == (None, (), None)
