"""The families served through their traits: every stage exact against HF.

For each family of :data:`._families.NEW_FAMILIES` and each stage it offers,
skvlm pools layers 0, 1 and -1 with every pooling in one pass, over a padded
batch of 4 (images of different sizes and tile counts, prompts of different
lengths) and one image at a time; both equal HF's own outputs computed one
example at a time (``_references``).
"""

import numpy as np
import pytest
import torch

from skvlm.models import load_adapter

from ._families import NEW_FAMILIES
from ._references import expected

LAYERS = (0, 1, -1)

CASES = [
    pytest.param(family.name, stage, id=f"{family.name}-{stage}", marks=family.marks)
    for family in NEW_FAMILIES
    for stage in family.poolings
]


def _pooled(adapter, images, prompts, stage, requests):
    with torch.inference_mode():
        batch = adapter.prepare(images, prompts)
        return {
            k: v.numpy() for k, v in adapter.extract(batch, stage, requests).items()
        }


@pytest.mark.parametrize("name, stage", CASES)
def test_stage_equals_hf_at_batch_1_and_4(built, name, stage):
    from ._families import BY_NAME

    family = BY_NAME[name]
    adapter = load_adapter(built.path(name), device="cpu")
    assert stage in adapter.stages
    examples = built.reference(name)
    n = len(examples[0].stages[stage].states)
    assert adapter.n_layers(stage) == n  # HF's own count of entries
    layers = sorted({layer % n for layer in LAYERS})
    requests = [(layer, p) for layer in layers for p in family.poolings[stage]]
    images, prompts = built.images(name), built.prompts(name)
    together = _pooled(adapter, images, prompts, stage, requests)
    alone = [
        _pooled(adapter, [image], [prompt], stage, requests)
        for image, prompt in zip(images, prompts, strict=True)
    ]
    for layer, pooling in requests:
        want = expected(examples, stage, [layer], pooling)
        np.testing.assert_allclose(
            together[(layer, pooling)],
            want,
            atol=1e-5,
            rtol=1e-6,  # float32 rounding on large values (Gemma 3n's AltUp)
            err_msg=f"{layer} {pooling}",
        )
        one_by_one = np.concatenate([a[(layer, pooling)] for a in alone])
        np.testing.assert_allclose(one_by_one, want, atol=1e-5, rtol=1e-6)
