"""Spatial importance: exact per-patch tokens, exact perturbed poolings, planted signals."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import (
    AutoProcessor,
    CLIPModel,
    LlavaForConditionalGeneration,
)

from skvlm import VLMEmbeddingTransformer
from skvlm.inspection import patch_tokens, plot_spatial_importance, spatial_importance
from skvlm.testing import make_tiny_clip, random_images

PROMPT = "What is it?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_images(n, seed, patch=(0, 0)):
    """Noise images whose class is the brightness of one 8x8 patch of 32x32."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = []
    for label in y:
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        low, high = (160, 256) if label else (0, 96)
        r, c = patch
        pixels[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = rng.integers(
            low, high, (8, 8, 3)
        )
        images.append(Image.fromarray(pixels))
    return images, y


# -- the tokens are HF's ----------------------------------------------------------------
def _clip_states(path, images):
    model = CLIPModel.from_pretrained(path).eval()
    pixels = AutoProcessor.from_pretrained(path).image_processor(
        images=images, return_tensors="pt"
    )
    with torch.no_grad():
        return model.vision_model(**pixels, output_hidden_states=True).hidden_states


def _llava_states(path, images):
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    states, image_rows = [], []
    for image in images:  # one at a time: no padding in the reference
        inputs = processor(
            images=[image],
            text=[f"USER: <image>\n{PROMPT} ASSISTANT:"],
            return_tensors="pt",
        )
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        states.append([h[0] for h in out.hidden_states])
        image_rows.append(inputs["input_ids"][0] == model.config.image_token_id)
    return states, image_rows


@pytest.mark.parametrize("layer", [0, 2, -1])
def test_patch_tokens_equal_hf_vision_hidden_states(clip_path, layer):
    images = random_images(5)
    vlm = VLMEmbeddingTransformer(clip_path, layer=layer, pooling="mean", batch_size=2)
    tokens = patch_tokens(vlm.fit(), images)
    expected = _clip_states(clip_path, images)[layer][:, 1:].numpy()  # CLS left out
    assert tokens.shape == (5, 16, 32)
    np.testing.assert_allclose(tokens, expected, atol=1e-5)


def test_patch_tokens_equal_hf_language_hidden_states_at_image_positions(llava_path):
    images = random_images(3)
    vlm = VLMEmbeddingTransformer(
        llava_path,
        stage="language",
        layer=[1, 2],
        pooling="image_mean",
        prompt=PROMPT,
    ).fit()
    states, image_rows = _llava_states(llava_path, images)
    for layer in (1, 2):
        tokens = patch_tokens(vlm, images, layer=layer)
        expected = np.stack(
            [s[layer][m].numpy() for s, m in zip(states, image_rows, strict=True)]
        )
        assert tokens.shape == (3, 16, 32)
        np.testing.assert_allclose(tokens, expected, atol=1e-5)


# -- the perturbed features are exact ------------------------------------------------------
def _reference_drops(states, patches, pooling, method, probe, y, normalize=False):
    """Score drops recomputed from full HF sequences, one token replaced at a time."""
    scorer = get_scorer("accuracy")

    def pooled(seqs):
        rows = []
        for seq, mask in zip(seqs, pooling_masks, strict=True):
            rows.append(seq[mask].max(0) if pooling == "max" else seq[mask].mean(0))
        out = np.stack(rows)
        if normalize:
            out = out / np.linalg.norm(out, axis=1, keepdims=True)
        return out

    seqs = [s.astype(np.float64) for s in states]
    pooling_masks = [m[1] for m in patches]
    base = scorer(probe, pooled(seqs), y)
    positions = [np.flatnonzero(m[0]) for m in patches]
    drops = []
    for p in range(len(positions[0])):
        mean_token = np.mean(
            [s[pos[p]] for s, pos in zip(seqs, positions, strict=True)], axis=0
        )
        changed = []
        for s, pos in zip(seqs, positions, strict=True):
            s = s.copy()
            s[pos[p]] = 0.0 if method == "zero" else mean_token
            changed.append(s)
        drops.append(base - scorer(probe, pooled(changed), y))
    return np.asarray(drops)


def _probe_on(vlm, images, y):
    return make_pipeline(vlm, LogisticRegression(C=100.0, max_iter=2000)).fit(images, y)


@pytest.mark.parametrize(
    ("layer", "pooling", "method", "normalize"),
    [(0, "mean", "zero", False), (1, "max", "mean", False), (2, "mean", "mean", True)],
)
def test_vision_token_replacement_is_exact(
    clip_path, layer, pooling, method, normalize
):
    images, y = random_images(16, seed=3), np.arange(16) % 3
    vlm = VLMEmbeddingTransformer(
        clip_path, layer=layer, pooling=pooling, normalize=normalize
    )
    pipe = _probe_on(vlm, images, y)
    result = spatial_importance(pipe, images, y, method=method, scoring="accuracy")
    states = _clip_states(clip_path, images)[layer].numpy()
    patches = [(np.arange(17) > 0, np.arange(17) > 0)] * len(images)
    expected = _reference_drops(
        list(states), patches, pooling, method, pipe[-1], y, normalize
    )
    np.testing.assert_allclose(result.importances_mean.ravel(), expected, atol=1e-9)
    assert result.grid_shape == (4, 4) and result.importances.shape == (4, 4, 1)


@pytest.mark.parametrize("pooling", ["image_mean", "mean", "max"])
def test_language_token_replacement_is_exact(llava_path, pooling):
    images, y = random_images(9, seed=4), np.arange(9) % 3
    vlm = VLMEmbeddingTransformer(
        llava_path, stage="language", layer=2, pooling=pooling, prompt=PROMPT
    )
    pipe = _probe_on(vlm, images, y)
    result = spatial_importance(pipe, images, y, method="mean", scoring="accuracy")
    states, image_rows = _llava_states(llava_path, images)
    seqs = [s[2].numpy() for s in states]
    masks = [
        (m.numpy(), m.numpy() if pooling == "image_mean" else np.ones(len(m), bool))
        for m in image_rows
    ]
    expected = _reference_drops(seqs, masks, pooling, "mean", pipe[-1], y)
    np.testing.assert_allclose(result.importances_mean.ravel(), expected, atol=1e-9)


def test_permutations_follow_random_state_and_maps_average(clip_path):
    images, y = random_images(12, seed=5), np.arange(12) % 2
    pipe = _probe_on(
        VLMEmbeddingTransformer(clip_path, layer=0, pooling="mean"), images, y
    )
    a = spatial_importance(pipe, images, y, n_repeats=3, random_state=7)
    b = spatial_importance(pipe, images, y, n_repeats=3, random_state=7)
    np.testing.assert_array_equal(a.importances, b.importances)
    assert a.importances.shape == (4, 4, 3) and a.method == "permute"
    np.testing.assert_allclose(a.importances_mean, a.importances.mean(axis=-1))
    np.testing.assert_allclose(a.class_maps[1], a.image_maps[y == 1].mean(axis=0))
    np.testing.assert_array_equal(a.classes, [0, 1])


# -- planted signal: the map finds the region -------------------------------------------
@pytest.mark.parametrize(("model_seed", "patch"), [(0, (0, 0)), (1, (2, 3))])
@pytest.mark.parametrize(
    ("layer", "pooling", "method"),
    [(0, "mean", "permute"), (0, "mean", "mean"), (1, "max", "permute")],
)
def test_planted_patch_is_found_by_token_methods(
    tmp_path_factory, model_seed, patch, layer, pooling, method
):
    path = _clip(tmp_path_factory, model_seed)
    images, y = planted_images(40, seed=model_seed, patch=patch)
    pipe = make_pipeline(
        VLMEmbeddingTransformer(path, layer=layer, pooling=pooling),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    ).fit(images, y)
    result = spatial_importance(pipe, images, y, method=method, random_state=0)
    _assert_peak(result.importances_mean, patch)
    for class_map in result.class_maps:  # each class relies on the same region
        assert np.unravel_index(class_map.argmax(), (4, 4)) == patch


def test_planted_patch_is_found_by_occlusion_with_cls_pooling(tmp_path_factory):
    # cls never reads the patch tokens of its layer: occlusion reruns the model
    path, patch = _clip(tmp_path_factory, 0), (1, 2)
    images, y = planted_images(40, seed=5, patch=patch)
    pipe = make_pipeline(
        VLMEmbeddingTransformer(path, layer=-1, pooling="cls"),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    ).fit(images, y)
    result = spatial_importance(pipe, images, y)
    assert result.method == "occlude"
    # deep layers mix regions, so other patches matter a little too
    _assert_peak(result.importances_mean, patch, ratio=2)


@pytest.mark.parametrize(
    ("seed", "patch", "layer", "pooling", "method", "ratio"),
    [
        (0, (0, 0), 0, "image_mean", "permute", 3),
        (1, (2, 3), 0, "image_mean", "permute", 3),
        # last never reads image tokens of its layer; the LM's depth mixes regions
        (2, (1, 1), -1, "last", "occlude", 1.5),
    ],
)
def test_planted_patch_is_found_at_the_language_stage(
    llava_path, seed, patch, layer, pooling, method, ratio
):
    images, y = planted_images(40, seed=seed, patch=patch)
    vlm = VLMEmbeddingTransformer(
        llava_path, stage="language", layer=layer, pooling=pooling, prompt=PROMPT
    )
    pipe = make_pipeline(vlm, StandardScaler(), LogisticRegression(max_iter=1000))
    pipe.fit(images, y)
    result = spatial_importance(pipe, images, y, method=method, random_state=0)
    _assert_peak(result.importances_mean, patch, ratio=ratio)


_CLIPS = {}


def _clip(tmp_path_factory, seed):
    if seed not in _CLIPS:
        _CLIPS[seed] = make_tiny_clip(tmp_path_factory.mktemp(f"clip{seed}"), seed=seed)
    return _CLIPS[seed]


def _assert_peak(importance, patch, ratio=3):
    values = np.sort(importance.ravel())
    assert np.unravel_index(importance.argmax(), importance.shape) == patch
    # clearly above every other patch, not a near tie
    assert values[-1] > 0.15 and values[-1] > ratio * max(values[-2], 0.01)


def test_occlusion_equals_hf_on_blanked_pixels(clip_path):
    # reference: blank the patch in HF's own pixel tensor, rerun HF, take CLS
    images, y = random_images(8, seed=6), np.arange(8) % 2
    pipe = _probe_on(VLMEmbeddingTransformer(clip_path, pooling="cls"), images, y)
    result = spatial_importance(pipe, images, y, method="occlude", scoring="accuracy")
    model = CLIPModel.from_pretrained(clip_path).eval()
    pixels = AutoProcessor.from_pretrained(clip_path).image_processor(
        images=images, return_tensors="pt"
    )["pixel_values"]
    scorer, probe = get_scorer("accuracy"), pipe[-1]

    def cls_features(pixel_values):
        with torch.no_grad():
            out = model.vision_model(pixel_values, output_hidden_states=True)
        return out.hidden_states[-1][:, 0].numpy()

    baseline = scorer(probe, cls_features(pixels), y)
    assert result.baseline_score == pytest.approx(baseline)
    expected = []
    for p in range(16):
        r, c = divmod(p, 4)
        blanked = pixels.clone()
        blanked[:, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = 0
        expected.append(baseline - scorer(probe, cls_features(blanked), y))
    np.testing.assert_allclose(result.importances_mean.ravel(), expected, atol=1e-9)
    assert result.importances.shape == (4, 4, 1)


# -- one pass per image, errors, plot ----------------------------------------------------
def test_token_methods_run_each_image_once(clip_path, forward_log):
    images, y = random_images(10, seed=9), np.arange(10) % 2
    pipe = _probe_on(VLMEmbeddingTransformer(clip_path, pooling="mean"), images, y)
    forward_log.clear()
    spatial_importance(pipe, images, y, n_repeats=4, random_state=0)
    assert len(forward_log.read()) == 10


def test_errors_name_the_problem_and_the_fix(clip_path):
    images, y = random_images(4), np.array([0, 1, 0, 1])
    pipe = _probe_on(VLMEmbeddingTransformer(clip_path, pooling="cls"), images, y)
    with pytest.raises(ValueError, match="method='occlude'"):
        spatial_importance(pipe, images, y, method="permute")
    with pytest.raises(ValueError, match="'method' parameter"):
        spatial_importance(pipe, images, y, method="shap")
    with pytest.raises(TypeError, match="first step is a VLMEmbeddingTransformer"):
        spatial_importance(pipe[-1], images, y)
    with pytest.raises(TypeError, match="not a VLMEmbeddingTransformer"):
        spatial_importance(
            Pipeline([("s", StandardScaler()), ("c", pipe[-1])]), images, y
        )
    with pytest.raises(ValueError, match="'scoring' parameter"):
        spatial_importance(pipe, images, y, scoring=["accuracy"], method="occlude")
    multi = VLMEmbeddingTransformer(clip_path, layer=[0, 1], pooling="mean").fit()
    with pytest.raises(ValueError, match="pass layer="):
        patch_tokens(multi, images)


def test_plot_spatial_importance_returns_a_figure():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = random_images(1)[0]
    figure = plot_spatial_importance(image, np.arange(16.0).reshape(4, 4), title="t")
    assert isinstance(figure, matplotlib.figure.Figure)
    assert len(figure.axes) == 2  # the image and the colour bar
    _, ax = plt.subplots()
    assert plot_spatial_importance(image, np.eye(4), ax=ax, colorbar=False) is ax.figure
    plt.close("all")
    with pytest.raises(ValueError, match="must be 2-D"):
        plot_spatial_importance(image, np.arange(16.0))


def test_arguments_are_checked_before_any_model_work(clip_path, monkeypatch):
    from skvlm import clear_model_cache
    from skvlm.models import _registry

    images, y = random_images(4, seed=2), np.arange(4) % 2
    pipe = _probe_on(VLMEmbeddingTransformer(clip_path, pooling="mean"), images, y)
    clear_model_cache()

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(_registry, "_load", no_loading)
    with pytest.raises(ValueError, match="X has 4 images but y has 3 entries"):
        spatial_importance(pipe, images, y[:3])
    with pytest.raises(ValueError, match="'n_repeats' parameter"):
        spatial_importance(pipe, images, y, n_repeats=0)
    with pytest.raises(ValueError, match="'method' parameter"):
        spatial_importance(pipe, images, y, method="blur")
    with pytest.raises(ValueError, match="'layer' parameter"):
        patch_tokens(pipe[0], images, layer="last")
