"""VLMTextEmbeddingTransformer against HF's get_text_features computed here."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from transformers import AutoModel, AutoProcessor

from skvlm import VLMTextEmbeddingTransformer

TEXTS = ["a photo of a cat.", "a dog.", "a photo of a red car on the road."]


def _hf_text_features(path, texts, **tokenizer_kwargs):
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    with torch.no_grad():
        rows = []
        for text in texts:  # one at a time: no padding at all
            tokens = tokenizer([text], return_tensors="pt", **tokenizer_kwargs)
            tokens.pop("token_type_ids", None)
            rows.append(model.get_text_features(**tokens).pooler_output[0].numpy())
    return np.stack(rows)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_equals_hf_get_text_features(family, clip_path, siglip_path):
    path = {"clip": clip_path, "siglip": siglip_path}[family]
    # SigLIP was trained on texts padded to max_length, and its pooling reads
    # the last position: skvlm pads as its processor does.
    kwargs = {"padding": "max_length", "max_length": 64} if family == "siglip" else {}
    text = VLMTextEmbeddingTransformer(path, batch_size=2, verbose=0).fit()
    got = text.transform(TEXTS)
    assert got.dtype == np.float32 and got.shape == (3, text.n_features_out_)
    np.testing.assert_allclose(got, _hf_text_features(path, TEXTS, **kwargs), atol=1e-5)


def test_normalize_dataframe_and_names(clip_path):
    text = VLMTextEmbeddingTransformer(
        clip_path, normalize=True, text_column="caption", verbose=0
    )
    got = text.fit_transform(pd.DataFrame({"caption": TEXTS}))
    expected = _hf_text_features(clip_path, TEXTS)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert list(text.get_feature_names_out()[:2]) == ["text_0", "text_1"]


def test_clone_pickle_and_errors(clip_path, vit_path):
    text = VLMTextEmbeddingTransformer(clip_path, verbose=0)
    with pytest.raises(NotFittedError):
        text.transform(TEXTS)
    fitted = text.fit()
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.transform(TEXTS), fitted.transform(TEXTS))
    assert clone(text).get_params() == text.get_params()
    with pytest.raises(TypeError, match="one string"):
        fitted.transform("a cat")
    with pytest.raises(TypeError, match=r"X\[1\] is a int"):
        fitted.transform(["a cat", 3])
    with pytest.raises(ValueError, match="without a 'text' column"):
        fitted.transform(pd.DataFrame({"caption": TEXTS}))
    with pytest.raises(ValueError, match="needs a CLIP-style model with a text"):
        VLMTextEmbeddingTransformer(vit_path, verbose=0).fit()
