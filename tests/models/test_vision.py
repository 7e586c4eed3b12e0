"""Every vision-family site equals HF's own outputs plus the pooling computed here."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from skvlm import VLMEmbeddingTransformer
from skvlm.testing import random_images

FAMILIES = ["clip", "siglip", "siglip2", "vit", "dinov2"]


@pytest.fixture(scope="module")
def reference(request, clip_path, siglip_path, siglip2_path, vit_path, dinov2_path):
    """HF's hidden states, pooled outputs and masks for each family, computed once."""
    paths = dict(
        clip=clip_path,
        siglip=siglip_path,
        siglip2=siglip2_path,
        vit=vit_path,
        dinov2=dinov2_path,
    )
    images = random_images(5, seed=1)
    out = {}
    for family, path in paths.items():
        model = AutoModel.from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
        processor = getattr(processor, "image_processor", processor)
        inputs = dict(processor(images=images, return_tensors="pt"))
        tower = getattr(model, "vision_model", model)
        with torch.no_grad():
            hf = tower(**inputs, output_hidden_states=True)
            projected = (
                model.get_image_features(**inputs).pooler_output
                if hasattr(model, "get_image_features")
                else None
            )
        mask = inputs.get("pixel_attention_mask")
        out[family] = dict(
            path=path,
            images=images,
            hidden=[h.numpy() for h in hf.hidden_states],
            pooler=hf.pooler_output.numpy(),
            projected=None if projected is None else projected.numpy(),
            mask=None if mask is None else mask.numpy().astype(bool),
        )
    return out


def _expected(ref, family, layer, pooling):
    hidden = ref["hidden"][layer]
    has_cls = family in ("clip", "vit", "dinov2")
    patches = hidden[:, 1:] if has_cls else hidden
    mask = ref["mask"] if ref["mask"] is not None else np.ones(patches.shape[:2], bool)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        return (patches * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    if pooling == "max":
        return np.where(mask[..., None], patches, -np.inf).max(1)
    if pooling == "pooler":
        return ref["pooler"]
    # int position among valid tokens
    rows = []
    valid = np.ones(hidden.shape[:2], bool) if ref["mask"] is None else ref["mask"]
    for h, m in zip(hidden, valid, strict=True):
        rows.append(h[m][pooling])
    return np.stack(rows)


CASES = [
    (family, layer, pooling)
    for family in FAMILIES
    for layer in (0, 1, -1)
    for pooling in ("cls", "mean", "max", 0, -1, 2)
    if not (pooling == "cls" and family in ("siglip", "siglip2"))
] + [(family, -1, "pooler") for family in FAMILIES]


@pytest.mark.parametrize("family, layer, pooling", CASES)
def test_vision_site_equals_hf(reference, family, layer, pooling):
    ref = reference[family]
    vlm = VLMEmbeddingTransformer(
        ref["path"], layer=layer, pooling=pooling, batch_size=2
    )
    got = vlm.fit_transform(ref["images"])
    np.testing.assert_allclose(got, _expected(ref, family, layer, pooling), atol=1e-5)
    assert got.dtype == np.float32


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_projector_equals_hf_image_features(reference, family):
    ref = reference[family]
    got = VLMEmbeddingTransformer(ref["path"], stage="projector").fit_transform(
        ref["images"]
    )
    np.testing.assert_allclose(got, ref["projected"], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_list_concatenates_in_order(reference, family):
    ref = reference[family]
    got = VLMEmbeddingTransformer(
        ref["path"], layer=[-1, 0], pooling="mean"
    ).fit_transform(ref["images"])
    expected = np.hstack(
        [_expected(ref, family, -1, "mean"), _expected(ref, family, 0, "mean")]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_siglip2_pads_variable_patch_grids(reference):
    # The images have different aspect ratios, so some patch grids are padded.
    assert not reference["siglip2"]["mask"].all()


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_size_does_not_change_results(reference, family):
    ref = reference[family]
    one = VLMEmbeddingTransformer(ref["path"], pooling="mean", batch_size=1)
    many = VLMEmbeddingTransformer(ref["path"], pooling="mean", batch_size=5)
    np.testing.assert_allclose(
        one.fit_transform(ref["images"]), many.fit_transform(ref["images"]), atol=1e-5
    )


def test_early_exit_leaves_model_usable(reference):
    ref = reference["clip"]
    shallow = VLMEmbeddingTransformer(ref["path"], layer=0, pooling="mean").fit(None)
    deep = VLMEmbeddingTransformer(ref["path"], layer=-1, pooling="pooler").fit(None)
    shallow.transform(ref["images"])
    np.testing.assert_allclose(deep.transform(ref["images"]), ref["pooler"], atol=1e-5)


def test_early_exit_skips_later_blocks(reference):
    ref = reference["clip"]
    vlm = VLMEmbeddingTransformer(ref["path"], layer=1, pooling="mean").fit(None)
    blocks = vlm._adapter().model.vision_model.encoder.layers
    calls = []
    handles = [
        b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
        for i, b in enumerate(blocks)
    ]
    try:
        vlm.transform(ref["images"][:2])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0]
