"""Recall@k for image-text retrieval, against values worked out by hand."""

import numpy as np
import pytest

from skvlm import VLMEmbeddingTransformer, VLMTextEmbeddingTransformer
from skvlm.metrics import image_to_text_recall, recall_at_k_scorer, text_to_image_recall
from skvlm.testing import random_images

# Unit vectors at angles, so every cosine is cos(angle difference).
IMAGES = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
ANGLES = np.deg2rad([10, 100, 170, 50, 255])
TEXTS = 3.0 * np.column_stack([np.cos(ANGLES), np.sin(ANGLES)])  # scale: no effect
# Images sit at 0, 90 and 180 degrees. Texts and the image each describes:
# t0 10 deg -> image 0 (nearest: image 0)        text ranks of its image: 1st
# t1 100 deg -> image 1 (nearest: image 1)       1st
# t2 170 deg -> image 1 (order: img2, img1, img0) 2nd
# t3 50 deg -> image 2 (order: img1, img0, img2)  3rd
# t4 255 deg -> image 2 (img2 75 away, img0 105, img1 165) 1st
TEXT_IMAGE = [0, 1, 1, 2, 2]


@pytest.mark.parametrize(("k", "expected"), [(1, 3 / 5), (2, 4 / 5), (3, 1.0)])
def test_text_to_image(k, expected):
    assert text_to_image_recall(IMAGES, TEXTS, TEXT_IMAGE, k=k) == pytest.approx(
        expected
    )


def test_image_to_text():
    # Image 0 (0 deg): texts by similarity t0 (10), t3 (50), t1 (100)...: t0 is its
    # own -> hit at k=1. Image 1 (90 deg): t1 (10 away) first -> hit. Image 2 (180
    # deg): t2 (10 away) first, but t2 describes image 1; its own t4 is 75 away,
    # next (t1 is 80 away) -> rank 2.
    assert image_to_text_recall(IMAGES, TEXTS, TEXT_IMAGE, k=1) == pytest.approx(2 / 3)
    assert image_to_text_recall(IMAGES, TEXTS, TEXT_IMAGE, k=2) == pytest.approx(1.0)


def test_errors():
    with pytest.raises(ValueError, match="same width"):
        text_to_image_recall(IMAGES, TEXTS[:, :1], TEXT_IMAGE)
    with pytest.raises(ValueError, match="one int per text"):
        text_to_image_recall(IMAGES, TEXTS, [0, 1])
    with pytest.raises(ValueError, match=r"text_image\[1\] = 7 names no image"):
        text_to_image_recall(IMAGES, TEXTS, [0, 7, 1, 2, 2])
    with pytest.raises(ValueError, match=r"Images \[0\] have no text"):
        image_to_text_recall(IMAGES, TEXTS, [1, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="k=0"):
        text_to_image_recall(IMAGES, TEXTS, TEXT_IMAGE, k=0)
    with pytest.raises(ValueError, match="direction='both'"):
        recall_at_k_scorer(None, direction="both")


def test_scorer_equals_the_function_on_the_transformers_outputs(clip_path):
    images = random_images(4)
    captions = ["a cat.", "a dog.", "a red car.", "a photo of a cat."]
    vlm = VLMEmbeddingTransformer(clip_path, stage="projector", pooling="pooler")
    vlm.fit()
    text = VLMTextEmbeddingTransformer(clip_path, verbose=0)
    image_features = vlm.transform(images)
    text_features = text.fit_transform(captions)
    for direction, metric in [
        ("text_to_image", text_to_image_recall),
        ("image_to_text", image_to_text_recall),
    ]:
        scorer = recall_at_k_scorer(text, k=2, direction=direction)
        expected = metric(image_features, text_features, [0, 1, 2, 3], k=2)
        assert scorer(vlm, images, captions) == pytest.approx(expected)
