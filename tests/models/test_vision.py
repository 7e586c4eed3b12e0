"""What is special to the vision families (CLIP, SigLIP, SigLIP2, ViT, DINOv2).

Their sites, pooled outputs and projected embeddings against HF are in
``test_family_matrix.py``.
"""

import numpy as np

from skvlm import VLMEmbeddingTransformer

from ._references import expected


def test_siglip2_pads_variable_patch_grids(built):
    # The images have different aspect ratios, so some patch grids are padded.
    assert any(example.facts["padded"] for example in built.reference("siglip2"))


def test_early_exit_leaves_model_usable(built):
    path, images = built.path("clip"), built.images("clip")
    shallow = VLMEmbeddingTransformer(path, layer=0, pooling="mean").fit(None)
    deep = VLMEmbeddingTransformer(path, layer=-1, pooling="pooler").fit(None)
    shallow.transform(images)
    np.testing.assert_allclose(
        deep.transform(images),
        expected(built.reference("clip"), "vision", [-1], "pooler"),
        atol=1e-5,
    )
