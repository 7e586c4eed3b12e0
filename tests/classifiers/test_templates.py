"""Template sets and class descriptions: class embeddings against HF's
get_text_features computed here, and the shipped set against the CLIP notebook."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from skvlm.classifiers import TEMPLATE_SETS, CLIPZeroShotClassifier, get_templates
from skvlm.testing import random_images

NAMES = {0: "cat", 1: "dog", 2: "red car"}


def _hf_class_embeddings(path, prompts):
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    out = []
    with torch.no_grad():
        for texts in prompts:
            tokens = tokenizer(texts, return_tensors="pt", padding=True)
            emb = model.get_text_features(**tokens).pooler_output
            mean = torch.nn.functional.normalize(emb, dim=-1).mean(0)
            out.append((mean / mean.norm()).numpy())
    return np.stack(out)


def test_openai_imagenet_set():
    templates = get_templates("openai_imagenet")
    assert TEMPLATE_SETS == ("openai_imagenet",)
    assert len(templates) == len(set(templates)) == 80
    assert all(t.count("{}") == 1 for t in templates)
    # First, a middle one and last of the notebook's imagenet_templates, in order.
    assert templates[0] == "a bad photo of a {}."
    assert templates[4] == "a low resolution photo of the {}."
    assert templates[-1] == "a tattoo of the {}."
    templates.append("mutated")
    assert len(get_templates("openai_imagenet")) == 80


def test_named_set_equals_hf_ensemble(clip_path):
    y = np.array([0, 1, 2, 0])
    clf = CLIPZeroShotClassifier(
        clip_path, class_names=NAMES, templates="openai_imagenet"
    ).fit(random_images(4), y)
    templates = get_templates("openai_imagenet")
    prompts = [[t.format(NAMES[c]) for t in templates] for c in (0, 1, 2)]
    assert clf.class_texts_ == prompts
    expected = _hf_class_embeddings(clip_path, prompts)
    np.testing.assert_allclose(clf.class_embeddings_, expected, atol=1e-5)


def test_class_descriptions_are_averaged_with_templates(clip_path):
    y = np.array([0, 1, 2])
    descriptions = {"cat": ["a small cat.", "a cat on a red car."], 2: ["a red car."]}
    clf = CLIPZeroShotClassifier(
        clip_path,
        class_names=NAMES,
        templates=["a photo of a {}."],
        class_descriptions=descriptions,
    ).fit(random_images(3), y)
    prompts = [
        ["a photo of a cat.", "a small cat.", "a cat on a red car."],
        ["a photo of a dog."],
        ["a photo of a red car.", "a red car."],
    ]
    assert clf.class_texts_ == prompts
    np.testing.assert_allclose(
        clf.class_embeddings_, _hf_class_embeddings(clip_path, prompts), atol=1e-5
    )


def test_descriptions_alone(clip_path):
    descriptions = {0: ["a cat."], 1: ["a dog."], 2: ["a red car.", "a car."]}
    clf = CLIPZeroShotClassifier(
        clip_path, class_names=NAMES, templates=(), class_descriptions=descriptions
    ).fit(random_images(3), [0, 1, 2])
    assert clf.class_texts_ == [descriptions[c] for c in (0, 1, 2)]
    np.testing.assert_allclose(
        clf.class_embeddings_,
        _hf_class_embeddings(clip_path, clf.class_texts_),
        atol=1e-5,
    )


def test_errors(clip_path):
    images, y = random_images(3), [0, 1, 2]
    with pytest.raises(ValueError, match="'imagenet80' names no shipped template set"):
        CLIPZeroShotClassifier(clip_path, templates="imagenet80").fit(images, y)
    with pytest.raises(ValueError, match=r"keys \['bird'\]"):
        CLIPZeroShotClassifier(
            clip_path, class_names=NAMES, class_descriptions={"bird": ["a bird."]}
        ).fit(images, y)
    with pytest.raises(ValueError, match=r"Class 1 \('dog'\) has no prompt"):
        CLIPZeroShotClassifier(
            clip_path,
            class_names=NAMES,
            templates=[],
            class_descriptions={0: ["a cat."], 2: ["a car."]},
        ).fit(images, y)
    with pytest.raises(ValueError, match="non-empty strings"):
        CLIPZeroShotClassifier(
            clip_path, class_names=NAMES, class_descriptions={0: [""]}
        ).fit(images, y)
