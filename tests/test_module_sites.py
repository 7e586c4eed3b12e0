"""Module sites against forward hooks written here on HF's own models."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from skvlm import FeatureStore, VLMEmbeddingTransformer
from skvlm.models import load_adapter, match_modules
from skvlm.testing import make_tiny_llava, random_images


def _hooked(model, names, run):
    """Each module's raw output (element 0 of a tuple) during ``run()``."""
    modules = dict(model.named_modules())
    seen = {}

    def reader(name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            seen.setdefault(name, out.detach().float())

        return hook

    handles = [modules[n].register_forward_hook(reader(n)) for n in names]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return [seen[n] for n in names]


@pytest.fixture(scope="module")
def images():
    return random_images(5)


def _clip_outputs(path, images, names):
    model = AutoModel.from_pretrained(path).eval()
    pixels = AutoProcessor.from_pretrained(path).image_processor(
        images=images, return_tensors="pt"
    )["pixel_values"]
    return _hooked(model, names, lambda: model.get_image_features(pixel_values=pixels))


def test_token_modules_pooled_like_the_stage(clip_path, images):
    # A glob over two blocks' MLPs; a tuple output (self-attention's).
    names = [
        "vision_model.encoder.layers.0.self_attn",
        "vision_model.encoder.layers.1.mlp",
        "vision_model.encoder.layers.2.mlp",
    ]
    raw = _clip_outputs(clip_path, images, names)
    for pooling, reduce in [
        ("mean", lambda h: h[:, 1:].mean(1)),  # patch tokens: CLS left out
        ("cls", lambda h: h[:, 0]),
        ("max", lambda h: h[:, 1:].amax(1)),
        (-1, lambda h: h[:, -1]),
    ]:
        vlm = VLMEmbeddingTransformer(
            clip_path,
            module=["vision_model.*.0.self_attn", "vision_model.*.[12].mlp"],
            pooling=pooling,
            batch_size=2,
        ).fit()
        assert vlm.modules_ == names
        expected = torch.cat([reduce(h) for h in raw], dim=1).numpy()
        np.testing.assert_allclose(vlm.transform(images), expected, atol=1e-5)
    assert vlm.get_feature_names_out()[0] == f"{names[0]}_pos-1_0"


def test_one_vector_per_image_taken_as_is(clip_path, images):
    # CLIP's post_layernorm normalises the pooled CLS vector: (batch, dim).
    (raw,) = _clip_outputs(clip_path, images, ["vision_model.post_layernorm"])
    assert raw.ndim == 2
    vlm = VLMEmbeddingTransformer(clip_path, module="*post_layernorm").fit()
    assert vlm.layer_widths_ == [raw.shape[1]]
    np.testing.assert_allclose(vlm.transform(images), raw.numpy(), atol=1e-5)


def test_language_stage_module(tmp_path, images):
    path = make_tiny_llava(tmp_path / "llava")
    prompt = load_adapter(path).format_prompt(None)
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    name = match_modules(model, "*language_model.layers.1.mlp")
    assert len(name) == 1
    raw = []
    for image in images:  # one at a time: no padding
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        raw += _hooked(model, name, lambda inputs=inputs: model(**inputs))
    vlm = VLMEmbeddingTransformer(
        path, stage="language", module="*language_model.layers.1.mlp", pooling="last"
    )
    expected = np.concatenate([h[:, -1].numpy() for h in raw])
    np.testing.assert_allclose(vlm.fit_transform(images), expected, atol=1e-5)


def test_in_the_store_under_the_module_name(clip_path, images, tmp_path):
    store = FeatureStore(tmp_path / "store", keep="all")
    plain = VLMEmbeddingTransformer(
        clip_path, module="vision_model.*.layers.1.mlp"
    ).fit()
    cached = VLMEmbeddingTransformer(
        clip_path, module="vision_model.*.layers.1.mlp", cache=store
    ).fit()
    first = cached.transform(images)
    np.testing.assert_allclose(first, plain.transform(images), atol=1e-6)
    stored = cached.stored_features(images)
    np.testing.assert_array_equal(np.asarray(stored[:]), first)
    # Another module, and the stage itself, are other namespaces: never served
    # the first module's vectors.
    other = VLMEmbeddingTransformer(
        clip_path, module="vision_model.*.layers.2.mlp", cache=store
    )
    other_first = other.fit_transform(images)
    assert stored.namespace != other.stored_features(images).namespace
    assert not np.allclose(other_first, first)
    stage = VLMEmbeddingTransformer(clip_path, layer=1, pooling="mean", cache=store)
    assert not np.allclose(stage.fit_transform(images), first)


def test_errors(clip_path):
    with pytest.raises(ValueError, match=r"matches none of the model's \d+ modules"):
        VLMEmbeddingTransformer(clip_path, module="*.no_such_module").fit()
    # The vision stage's pass stops before the projection.
    with pytest.raises(ValueError, match="did not run in the forward pass"):
        VLMEmbeddingTransformer(clip_path, module="visual_projection").fit()
    with pytest.raises(ValueError, match="did not run in the forward pass"):
        VLMEmbeddingTransformer(clip_path, module="text_model.encoder.layers.0").fit()
    with pytest.raises(ValueError, match="pooling='pooler'"):
        VLMEmbeddingTransformer(
            clip_path, module="vision_model.*.layers.1.mlp", pooling="pooler"
        ).fit()


def test_cli_lists_modules(capsys):
    from skvlm.cli import main
    from skvlm.models import load_adapter

    assert main(["sites", "skvlm/tiny-llava", "--modules", "*layers.0.mlp"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [
        name
        for name, _ in load_adapter("skvlm/tiny-llava").model.named_modules()
        if name.endswith("layers.0.mlp")
    ]
    assert lines[0].split() == ["module", "type"]
    assert [line.split()[0] for line in lines[1:]] == expected
    assert main(["sites", "skvlm/tiny-llava", "--modules", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "module,type" and len(rows) > 50
