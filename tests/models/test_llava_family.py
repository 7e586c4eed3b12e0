"""LLaVA-1.5 and LLaVA-NeXT through VLMEmbeddingTransformer, against HF's own outputs.

References are computed here from HF's ``output_hidden_states`` (or the vision
tower's own outputs) one image at a time, with the masks written out by hand, so a
padded batch through skvlm must match an unpadded HF run of each image.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from skvlm import VLMEmbeddingTransformer
from skvlm.testing._generative import (
    load_processor,
    make_tiny_llava,
    make_tiny_llava_next,
)

LAYERS = [0, 1, -1]
PROMPTS = ["What is this?", "Describe the object in this photo in one word", "a"]
# Sizes give LLaVA-NeXT different tile grids (2, 3 and 5 views).
SIZES = [(40, 50), (30, 64), (64, 20)]
LANGUAGE_POOLINGS = ["last", "mean", "max", "image_mean", "text_mean", -2, 0]


def make_images(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in sizes
    ]


def reduce(hidden, pooling, *, image=None, text=None, patches=None):
    """Hand-written pooling of one unpadded sequence (tokens, dim)."""
    if isinstance(pooling, int):
        return hidden[pooling]
    if pooling == "cls":
        return hidden[0]
    if pooling == "last":
        return hidden[-1]
    if pooling in ("mean", "max"):
        rows = hidden if patches is None else hidden[patches]
        return rows.mean(0) if pooling == "mean" else rows.max(0).values
    return hidden[image if pooling == "image_mean" else text].mean(0)


def language_reference(states, input_ids, image_token_id, special_ids, pooling):
    """``{layer: vector}`` of one unpadded example from HF's hidden states."""
    image = input_ids == image_token_id
    text = ~image & ~torch.isin(input_ids, torch.tensor(sorted(special_ids)))
    return {
        layer: reduce(states[layer][0], pooling, image=image, text=text).numpy()
        for layer in LAYERS
    }


def assert_rows_match(X, references, dim, atol=1e-5):
    """Row i of X holds LAYERS' features; references[i][layer] each one's reference."""
    for i, reference in enumerate(references):
        for j, layer in enumerate(LAYERS):
            np.testing.assert_allclose(
                X[i, j * dim : (j + 1) * dim],
                reference[layer],
                atol=atol,
                rtol=1e-5,
                err_msg=f"row {i}, layer {layer}",
            )


def extract(path, stage, pooling, images, prompts=None, layer=LAYERS, batch_size=3):
    vlm = VLMEmbeddingTransformer(
        path,
        stage=stage,
        layer=layer,
        pooling=pooling,
        batch_size=batch_size,
        device="cpu",
    )
    X = (
        images
        if prompts is None
        else pd.DataFrame({"image": images, "prompt": prompts})
    )
    return vlm.fit_transform(X)


class HF:
    """The checkpoint loaded by HF alone, for references."""

    def __init__(self, path):
        self.model = AutoModelForImageTextToText.from_pretrained(path).eval()
        self.processor = load_processor(path)
        self.tokenizer = self.processor.tokenizer
        self.specials = set(self.tokenizer.all_special_ids) - {
            self.model.config.image_token_id
        }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models on a shared 2-core machine: extra threads only contend
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    path = make_tiny_llava(tmp_path_factory.mktemp("llava"))
    return path, HF(path)


@pytest.fixture(scope="module")
def llava_next(tmp_path_factory):
    path = make_tiny_llava_next(tmp_path_factory.mktemp("llava_next"))
    return path, HF(path)


@pytest.fixture(scope="module")
def images():
    return make_images()


# -- LLaVA-1.5 ------------------------------------------------------------------------


def llava_text(prompt):
    return f"USER: <image>\n{prompt} ASSISTANT:"


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_llava_vision_matches_tower_hidden_states(llava, images, pooling):
    path, hf = llava
    X = extract(path, "vision", pooling, images)
    references = []
    for image in images:
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            states = hf.model.model.vision_tower(**pixels, output_hidden_states=True)
        patches = torch.arange(states.hidden_states[0].shape[1]) > 0  # CLS is token 0
        references.append(
            {
                k: reduce(states.hidden_states[k][0], pooling, patches=patches).numpy()
                for k in LAYERS
            }
        )
    assert_rows_match(X, references, dim=32)


def test_llava_vision_pooler_is_post_layernormed_cls(llava, images):
    path, hf = llava
    X = extract(path, "vision", "pooler", images, layer=-1)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        tower = hf.model.model.vision_tower
        pooled = tower.post_layernorm(tower(**pixels).last_hidden_state[:, 0])
    np.testing.assert_allclose(X, pooled.numpy(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_llava_projector_matches_image_features(llava, images, pooling):
    path, hf = llava
    X = extract(path, "projector", pooling, images, layer=0)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        features = hf.model.model.get_image_features(**pixels).pooler_output
    expected = torch.stack([reduce(f, pooling) for f in features]).numpy()
    assert X.shape == (3, 32)
    np.testing.assert_allclose(X, expected, atol=1e-5)


@pytest.mark.parametrize("pooling", LANGUAGE_POOLINGS)
def test_llava_language_matches_hf_hidden_states(llava, images, pooling):
    # prompts of different lengths: the batch is left-padded, HF runs one by one
    path, hf = llava
    X = extract(path, "language", pooling, images, PROMPTS)
    references = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        inputs = hf.processor(
            images=[image], text=[llava_text(prompt)], return_tensors="pt"
        )
        with torch.no_grad():
            states = hf.model.model(**inputs, output_hidden_states=True).hidden_states
        assert len(states) == 4  # embeddings + 3 blocks, the last after the norm
        references.append(
            language_reference(
                states,
                inputs["input_ids"][0],
                hf.model.config.image_token_id,
                hf.specials,
                pooling,
            )
        )
    assert_rows_match(X, references, dim=32)


def test_llava_language_last_entry_carries_final_norm(llava, images):
    path, hf = llava
    X = extract(path, "language", "last", images[:1], layer=-1)
    inputs = hf.processor(
        images=images[:1],
        text=[llava_text("What type of object is in this photo?")],
        return_tensors="pt",
    )
    lm = hf.model.model.language_model
    captured = []
    handle = lm.layers[-1].register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        with torch.no_grad():
            hf.model.model(**inputs)
            normed = lm.norm(captured[0])[0, -1]
    finally:
        handle.remove()
    np.testing.assert_allclose(X[0], normed.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "stage,pooling",
    [
        ("language", "mean"),
        ("language", "last"),
        ("projector", "mean"),
        ("vision", "mean"),
    ],
)
def test_llava_family_padding_invariance(llava, llava_next, images, stage, pooling):
    layer = 0 if stage == "projector" else LAYERS
    for path, _ in (llava, llava_next):
        prompts = PROMPTS if stage == "language" else None
        batched = extract(
            path, stage, pooling, images, prompts, layer=layer, batch_size=3
        )
        single = extract(
            path, stage, pooling, images, prompts, layer=layer, batch_size=1
        )
        np.testing.assert_allclose(batched, single, atol=1e-4)


# -- LLaVA-NeXT ---------------------------------------------------------------------------


def next_views(hf, image):
    """Pixel inputs of one image and its number of views (base + tiles)."""
    pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
    return pixels, pixels["pixel_values"].shape[1]


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "pooler"])
def test_llava_next_vision_covers_every_view(llava_next, images, pooling):
    path, hf = llava_next
    layers = [-1] if pooling == "pooler" else LAYERS
    X = extract(path, "vision", pooling, images, layer=layers)
    counts = []
    for i, image in enumerate(images):
        pixels, n_views = next_views(hf, image)
        counts.append(n_views)
        with torch.no_grad():
            out = hf.model.model.vision_tower(
                pixels["pixel_values"][0], output_hidden_states=True
            )
        if pooling == "pooler":
            np.testing.assert_allclose(X[i], out.pooler_output[0].numpy(), atol=1e-5)
            continue
        for j, layer in enumerate(layers):
            views = out.hidden_states[layer]  # (views, 1 + patches, dim)
            if pooling == "cls":
                expected = views[0, 0]
            else:
                patches = views[:, 1:].reshape(-1, views.shape[-1])
                expected = (
                    patches.mean(0) if pooling == "mean" else patches.max(0).values
                )
            np.testing.assert_allclose(
                X[i, j * 32 : (j + 1) * 32], expected.numpy(), atol=1e-5
            )
    assert len(set(counts)) > 1, "the test images should give different view counts"


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_llava_next_projector_includes_newline_tokens(llava_next, images, pooling):
    path, hf = llava_next
    X = extract(path, "projector", pooling, images, layer=0)
    lengths = []
    for i, image in enumerate(images):
        pixels, _ = next_views(hf, image)
        with torch.no_grad():
            tokens = hf.model.model.get_image_features(**pixels).pooler_output[0]
        lengths.append(len(tokens))
        np.testing.assert_allclose(X[i], reduce(tokens, pooling).numpy(), atol=1e-5)
    assert len(set(lengths)) > 1


@pytest.mark.parametrize("pooling", LANGUAGE_POOLINGS)
def test_llava_next_language_matches_hf_hidden_states(llava_next, images, pooling):
    path, hf = llava_next
    X = extract(path, "language", pooling, images, PROMPTS)
    references = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        text = f"[INST] <image>\n{prompt} [/INST]"
        inputs = hf.processor(images=[image], text=[text], return_tensors="pt")
        with torch.no_grad():
            states = hf.model.model(**inputs, output_hidden_states=True).hidden_states
        references.append(
            language_reference(
                states,
                inputs["input_ids"][0],
                hf.model.config.image_token_id,
                hf.specials,
                pooling,
            )
        )
    assert_rows_match(X, references, dim=32)


# -- prompts and errors ---------------------------------------------------------------


def test_prompt_formatting(llava, llava_next):
    from skvlm.models import load_adapter

    llava_adapter = load_adapter(llava[0], device="cpu")
    assert llava_adapter.format_prompt(None) == (
        "USER: <image>\nWhat type of object is in this photo? ASSISTANT:"
    )
    custom = "USER: <image>\nName it. ASSISTANT: It is a"
    assert llava_adapter.format_prompt(custom) == custom
    next_adapter = load_adapter(llava_next[0], device="cpu")
    assert next_adapter.format_prompt("Name it.") == "[INST] <image>\nName it. [/INST]"


def test_prompt_with_placeholder_is_used_as_is(llava, images):
    path, hf = llava
    text = "USER: <image>\nName it. ASSISTANT: It is a"
    X = extract(path, "language", "last", images[:1], [text], layer=-1)
    inputs = hf.processor(images=images[:1], text=[text], return_tensors="pt")
    with torch.no_grad():
        last = hf.model.model(**inputs).last_hidden_state[0, -1]
    np.testing.assert_allclose(X[0], last.numpy(), atol=1e-5)


def test_vision_site_never_runs_the_language_model(llava, images):
    from skvlm.models import load_adapter

    path, _ = llava
    adapter = load_adapter(path, device="cpu")
    calls = []
    handle = adapter.model.model.language_model.register_forward_pre_hook(
        lambda *args: calls.append(1)
    )
    try:
        extract(path, "vision", "mean", images[:1])
        extract(path, "projector", "mean", images[:1], layer=0)
    finally:
        handle.remove()
    assert calls == []


def test_language_pass_stops_after_the_deepest_layer(llava, images):
    from skvlm.models import load_adapter

    path, _ = llava
    adapter = load_adapter(path, device="cpu")
    ran = []
    handles = [
        block.register_forward_hook(lambda *args, i=i: ran.append(i))
        for i, block in enumerate(adapter.model.model.language_model.layers)
    ]
    try:
        extract(path, "language", "last", images[:1], layer=1)
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0]


@pytest.mark.parametrize(
    "params,message",
    [
        (
            dict(stage="language", layer=4),
            r"stack has 4 entries; use a layer in \[-4, 3\]",
        ),
        (dict(stage="vision", layer=-5), r"use a layer in \[-4, 3\]"),
        (
            dict(stage="projector", layer=1),
            r"stack has 1 entries; use a layer in \[-1, 0\]",
        ),
        (dict(stage="projector", pooling="cls"), "available: 'mean', 'max'"),
        (dict(stage="language", pooling="cls"), "available: 'last', 'mean', 'max'"),
        (
            dict(stage="vision", layer=1, pooling="pooler"),
            "'cls', 'mean', 'max', or an",
        ),
    ],
)
def test_site_errors_name_the_valid_choices(llava, params, message):
    with pytest.raises(ValueError, match=message):
        VLMEmbeddingTransformer(llava[0], device="cpu", **params).fit()


def test_unknown_family_error_lists_these_families():
    from types import SimpleNamespace

    from skvlm.models._registry import adapter_class

    with pytest.raises(ValueError, match="not supported by skvlm") as info:
        adapter_class(SimpleNamespace(model_type="mllama"))
    for family in (
        "llava (llava)",
        "llava_next (llava_next)",
        "paligemma (paligemma)",
        "blip-2 (blip-2)",
        "instructblip (instructblip)",
    ):
        assert family in str(info.value)


# -- the generic fallback, on a family without its own adapter (VipLLaVA) ------------


def make_tiny_vipllava(path):
    """VipLLaVA (multi-layer features, layer-normed projector) with LLaVA's processor."""
    from transformers import (
        LlavaConfig,
        VipLlavaConfig,
        VipLlavaForConditionalGeneration,
    )

    make_tiny_llava(path)  # the processor and tokenizer
    llava_config = LlavaConfig.from_pretrained(path)
    config = VipLlavaConfig(
        vision_config=llava_config.vision_config.to_dict(),
        text_config=llava_config.text_config.to_dict(),
        image_token_id=llava_config.image_token_id,
        vision_feature_layers=[-2, -1],
        pad_token_id=llava_config.pad_token_id,
    )
    torch.manual_seed(0)
    VipLlavaForConditionalGeneration(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vipllava(tmp_path_factory):
    path = make_tiny_vipllava(tmp_path_factory.mktemp("vipllava"))
    return path, HF(path)


@pytest.fixture
def with_generic_fallback(monkeypatch):
    """The registry, falling back to the generic adapter for unclaimed types."""
    from skvlm.models import _registry
    from skvlm.models._generic import GenericImageTextAdapter

    original = _registry.adapter_class

    def adapter_class(config):
        try:
            return original(config)
        except ValueError:
            if GenericImageTextAdapter.supports(config):
                return GenericImageTextAdapter
            raise

    monkeypatch.setattr(_registry, "adapter_class", adapter_class)


@pytest.mark.usefixtures("with_generic_fallback")
@pytest.mark.parametrize("pooling", ["last", "mean", "image_mean", "text_mean"])
def test_generic_language_matches_hf_hidden_states(vipllava, images, pooling):
    path, hf = vipllava
    X = extract(path, "language", pooling, images, PROMPTS)
    references = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        inputs = hf.processor(
            images=[image], text=[llava_text(prompt)], return_tensors="pt"
        )
        with torch.no_grad():
            states = hf.model.model(**inputs, output_hidden_states=True).hidden_states
        references.append(
            language_reference(
                states,
                inputs["input_ids"][0],
                hf.model.config.image_token_id,
                hf.specials,
                pooling,
            )
        )
    assert_rows_match(X, references, dim=32)


@pytest.mark.usefixtures("with_generic_fallback")
def test_generic_vision_and_projector_match_hf(vipllava, images):
    path, hf = vipllava
    from skvlm.models import load_adapter

    assert load_adapter(path, device="cpu").family == "generic-image-text"
    vision = extract(path, "vision", "cls", images)
    projector = extract(path, "projector", "mean", images, layer=0)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        states = hf.model.model.vision_tower(**pixels, output_hidden_states=True)
        tokens = hf.model.model.get_image_features(**pixels).pooler_output
    for j, layer in enumerate(LAYERS):
        np.testing.assert_allclose(
            vision[:, j * 32 : (j + 1) * 32],
            states.hidden_states[layer][:, 0].numpy(),
            atol=1e-5,
        )
    np.testing.assert_allclose(projector, tokens.mean(1).numpy(), atol=1e-5)
