"""CLIPZeroShotClassifier against probabilities computed here from HF's embeddings."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score
from transformers import AutoModel, AutoProcessor

from skvlm.classifiers._zero_shot import CLIPZeroShotClassifier
from skvlm.testing import random_images

NAMES = {0: "cat", 1: "dog", 2: "red car"}
TEMPLATES = ["a photo of a {}.", "a picture of the {}."]


def _hf_logits(path, images, padding):
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        pixels = processor.image_processor(images=images, return_tensors="pt")
        img = model.get_image_features(**pixels).pooler_output
        img = img / img.norm(dim=-1, keepdim=True)
        classes = []
        for label in sorted(NAMES):
            texts = [t.format(NAMES[label]) for t in TEMPLATES]
            kwargs = {"padding": padding}
            if padding == "max_length":
                kwargs["max_length"] = model.config.text_config.max_position_embeddings
            tokens = processor.tokenizer(texts, return_tensors="pt", **kwargs)
            tokens.pop("token_type_ids", None)
            emb = model.get_text_features(**tokens).pooler_output
            emb = emb / emb.norm(dim=-1, keepdim=True)
            mean = emb.mean(0)
            classes.append(mean / mean.norm())
        text = torch.stack(classes)
        bias = float(model.logit_bias) if hasattr(model, "logit_bias") else 0.0
        return (model.logit_scale.exp() * img @ text.T + bias).numpy()


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_probabilities_equal_hf_embeddings(family, clip_path, siglip_path):
    path = clip_path if family == "clip" else siglip_path
    images = random_images(5, seed=2)
    y = np.array([0, 1, 2, 0, 1])
    clf = CLIPZeroShotClassifier(path, class_names=NAMES, templates=TEMPLATES).fit(
        images, y
    )
    logits = _hf_logits(path, images, "longest" if family == "clip" else "max_length")
    np.testing.assert_allclose(
        clf.decision_function(images), logits, rtol=1e-4, atol=1e-4
    )
    if family == "clip":
        expected = torch.softmax(torch.tensor(logits), dim=1).numpy()
    else:
        sig = 1 / (1 + np.exp(-logits))
        expected = sig / sig.sum(1, keepdims=True)
    proba = clf.predict_proba(images)
    np.testing.assert_allclose(proba, expected, rtol=1e-4, atol=1e-6)
    # not uniform: each class name has its own text embedding
    assert np.ptp(proba, axis=1).min() > 1e-4
    # A random tiny model's logits nearly tie, so predict is checked against its own
    # (HF-verified) logits rather than against HF's rounding.
    np.testing.assert_array_equal(
        clf.predict(images), clf.classes_[clf.decision_function(images).argmax(1)]
    )


def test_list_class_names_and_string_labels(clip_path):
    images = random_images(4)
    y = np.array(["b", "a", "b", "a"])
    clf = CLIPZeroShotClassifier(clip_path, class_names=["cat", "dog"]).fit(images, y)
    assert list(clf.classes_) == ["a", "b"]
    assert clf.class_texts_ == [["a photo of a cat."], ["a photo of a dog."]]
    assert set(clf.predict(images)) <= {"a", "b"}


def test_works_in_cross_val_score_and_pickles(clip_path):
    images = random_images(8)
    y = np.arange(8) % 2
    clf = CLIPZeroShotClassifier(clip_path, class_names={0: "cat", 1: "dog"})
    scores = cross_val_score(clf, images, y, cv=2)
    assert scores.shape == (2,)
    fitted = clf.fit(images, y)
    blob = pickle.dumps(fitted)
    assert len(blob) < 20_000
    np.testing.assert_allclose(
        pickle.loads(blob).predict_proba(images),
        fitted.predict_proba(images),
        atol=1e-6,
    )


def test_errors(clip_path, vit_path):
    images = random_images(3)
    with pytest.raises(NotFittedError):
        CLIPZeroShotClassifier(clip_path).predict(images)
    with pytest.raises(ValueError, match="Several classes share a name.*crane"):
        CLIPZeroShotClassifier(
            clip_path, class_names={0: "crane", 1: "Crane", 2: "cat"}
        ).fit(images, [0, 1, 2])
    with pytest.raises(ValueError, match="tokenize to nothing"):
        CLIPZeroShotClassifier(clip_path, class_names={0: " ", 1: "cat", 2: "dog"}).fit(
            images, [0, 1, 2]
        )
    with pytest.raises(ValueError, match="no name for the labels"):
        CLIPZeroShotClassifier(clip_path, class_names={0: "cat"}).fit(images, [0, 1, 2])
    with pytest.raises(ValueError, match="3 classes"):
        CLIPZeroShotClassifier(clip_path, class_names=["cat"]).fit(images, [0, 1, 2])
    with pytest.raises(ValueError, match=r"exactly one '\{\}'"):
        CLIPZeroShotClassifier(clip_path, templates=["a photo"]).fit(images, [0, 1, 2])
    with pytest.raises(ValueError, match="needs a CLIP-style model"):
        CLIPZeroShotClassifier(vit_path).fit(images, [0, 1, 2])
    with pytest.raises(ValueError, match="empty|no classes|0 sample"):
        CLIPZeroShotClassifier(clip_path, class_names=[]).fit([], [])


def test_numeric_class_names_warn_at_the_users_line(clip_path):
    images = random_images(4)
    with pytest.warns(UserWarning, match="class names are numbers") as record:
        CLIPZeroShotClassifier(clip_path).fit(images, [0, 1, 2, 0])
    warning = next(w for w in record if "numbers" in str(w.message))
    assert "'a photo of a 0.'" in str(warning.message)
    assert "class_names" in str(warning.message)
    assert warning.filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        names = {0: "zero", 1: "one", 2: "two"}
        CLIPZeroShotClassifier(clip_path, class_names=names).fit(images, [0, 1, 2, 0])
        CLIPZeroShotClassifier(clip_path).fit(images, ["one", "two", "six", "one"])
