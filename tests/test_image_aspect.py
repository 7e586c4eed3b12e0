"""``image_aspect="pad"`` on the transformer and both classifiers: the model sees the
image padded to a square with the processor's mean, as LLaVA's ``expand2square``
does; padded and unpadded vectors never share a store entry."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from skvlm import FeatureStore, VLMEmbeddingTransformer
from skvlm.classifiers import CLIPZeroShotClassifier, VLMGenerativeClassifier
from skvlm.models import resolve_model

pytestmark = pytest.mark.filterwarnings("ignore::skvlm.models.EmbeddedModelWarning")

CLIP = "skvlm/tiny-clip"
LLAVA = "skvlm/tiny-llava"


def _expand2square(image, background):
    """LLaVA's ``llava/mm_utils.py`` function, written out here as the reference."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    if width > height:
        result.paste(image, (0, (width - height) // 2))
    else:
        result.paste(image, ((height - width) // 2, 0))
    return result


@pytest.fixture(scope="module")
def wide_images():
    rng = np.random.default_rng(0)
    sizes = [(20, 48), (50, 18), (30, 30)]  # wide, tall, already square
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in sizes
    ]


def _padded(model, images):
    processor = AutoProcessor.from_pretrained(resolve_model(model))
    mean = tuple(int(255 * m) for m in processor.image_processor.image_mean)
    return [_expand2square(im, mean) for im in images]


def test_transformer_pads_with_the_processor_mean(wide_images, tmp_path):
    path = resolve_model(CLIP)
    padded = _padded(CLIP, wide_images)
    # HF's own projected embedding of the images padded here
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        pixels = processor.image_processor(images=padded, return_tensors="pt")
        expected = model.get_image_features(**pixels).pooler_output.numpy()
    params = dict(stage="projector", pooling="pooler", device="cpu")
    pad = VLMEmbeddingTransformer(CLIP, image_aspect="pad", **params).fit()
    native = VLMEmbeddingTransformer(CLIP, **params).fit()
    np.testing.assert_allclose(pad.transform(wide_images), expected, atol=1e-5)
    assert not np.allclose(native.transform(wide_images)[:2], expected[:2], atol=1e-3)
    # the square image is left as it is
    np.testing.assert_allclose(
        native.transform(wide_images[2:]), expected[2:], atol=1e-5
    )

    # one store, both aspects: neither is served the other's vectors
    store = FeatureStore(tmp_path / "store")
    first = native.set_params(cache=store).transform(wide_images)
    padded_from_store = pad.set_params(cache=store).transform(wide_images)
    np.testing.assert_allclose(padded_from_store, expected, atol=1e-5)
    np.testing.assert_array_equal(native.transform(wide_images), first)


def test_invalid_image_aspect_is_refused(wide_images):
    with pytest.raises(ValueError, match="image_aspect"):
        VLMEmbeddingTransformer(CLIP, image_aspect="crop", device="cpu").fit()


def test_zero_shot_pads(wide_images):
    padded = _padded(CLIP, wide_images)
    params = dict(class_names=["cat", "dog", "car"], device="cpu")
    y = np.array([0, 1, 2])
    pad = CLIPZeroShotClassifier(CLIP, image_aspect="pad", **params).fit(wide_images, y)
    native = CLIPZeroShotClassifier(CLIP, **params).fit(wide_images, y)
    np.testing.assert_allclose(
        pad.decision_function(wide_images), native.decision_function(padded), atol=1e-5
    )


def test_generative_classifier_pads(wide_images):
    padded = _padded(LLAVA, wide_images)
    params = dict(class_names=["cat", "dog", "car"], device="cpu", max_new_tokens=4)
    y = np.array([0, 1, 2])
    pad = VLMGenerativeClassifier(LLAVA, image_aspect="pad", **params).fit(y, y)
    native = VLMGenerativeClassifier(LLAVA, **params).fit(y, y)
    np.testing.assert_allclose(
        pad.decision_function(wide_images), native.decision_function(padded), atol=1e-5
    )
    assert not np.allclose(
        pad.decision_function(wide_images[:2]),
        native.decision_function(wide_images[:2]),
        atol=1e-4,
    )
    generative = dict(strategy="open_ended")
    assert pad.set_params(**generative).generate(wide_images) == native.set_params(
        **generative
    ).generate(padded)
