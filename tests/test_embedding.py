"""VLMEmbeddingTransformer as a sklearn citizen: params, clone, pickle, output, errors."""

import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

import skvlm
from skvlm import ModelNotFoundError, VLMEmbeddingTransformer
from skvlm.testing import random_images


def test_params_are_stored_verbatim(clip_path):
    kwargs = dict(
        stage="vision",
        layer=[0, -1],
        pooling="max",
        prompt="hello",
        batch_size=3,
        device="cpu",
        dtype="float32",
        normalize=True,
        cache=None,
        verbose=0,
        on_error="nan",
        model_kwargs={"revision": None},
    )
    vlm = VLMEmbeddingTransformer(clip_path, **kwargs)
    params = vlm.get_params()
    assert params["model"] is clip_path
    for key, value in kwargs.items():
        assert params[key] is value


def test_clone_and_set_params(clip_path):
    vlm = VLMEmbeddingTransformer(clip_path, layer=1)
    other = clone(vlm).set_params(layer=2)
    assert vlm.layer == 1 and other.layer == 2
    assert not hasattr(other, "layers_")


def test_pickle_is_small_and_reloads_lazily(clip_path, images):
    vlm = VLMEmbeddingTransformer(clip_path, pooling="mean").fit(None)
    expected = vlm.transform(images)
    blob = pickle.dumps(vlm)
    assert len(blob) < 4_000  # the weights never travel with the estimator
    skvlm.clear_model_cache()
    restored = pickle.loads(blob)
    np.testing.assert_allclose(restored.transform(images), expected, atol=1e-6)


def test_clones_share_one_loaded_model(clip_path):
    a = VLMEmbeddingTransformer(clip_path).fit(None)
    b = clone(a).fit(None)
    assert a._extraction().adapter is b._extraction().adapter


def test_repr_is_short(clip_path):
    text = repr(VLMEmbeddingTransformer("some/model", layer=3))
    assert text == "VLMEmbeddingTransformer(layer=3, model='some/model')"


def test_unfitted_transform_raises(clip_path, images):
    with pytest.raises(NotFittedError):
        VLMEmbeddingTransformer(clip_path).transform(images)


def test_fitted_attributes(clip_path):
    vlm = VLMEmbeddingTransformer(clip_path, layer=[0, -1], pooling="auto").fit(None)
    assert vlm.family_ == "clip"
    assert vlm.n_layers_ == 4
    assert vlm.layers_ == [0, 3]
    assert vlm.pooling_ == "cls"
    assert vlm.n_features_out_ == 64


def test_feature_names_say_the_site(clip_path):
    vlm = VLMEmbeddingTransformer(clip_path, layer=[1, -1], pooling=-2).fit(None)
    names = vlm.get_feature_names_out()
    assert names[0] == "vision_l1_pos-2_0"
    assert names[-1] == "vision_l3_pos-2_31"
    assert len(names) == vlm.n_features_out_


def test_set_output_pandas_keeps_dataframe_index(clip_path, images):
    X = pd.DataFrame({"image": images}, index=[10 + i for i in range(len(images))])
    vlm = VLMEmbeddingTransformer(clip_path).set_output(transform="pandas")
    out = vlm.fit_transform(X)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == list(X.index)
    assert list(out.columns) == list(vlm.get_feature_names_out())


def test_set_output_polars(clip_path, images):
    pl = pytest.importorskip("polars")
    out = (
        VLMEmbeddingTransformer(clip_path)
        .set_output(transform="polars")
        .fit_transform(images)
    )
    assert isinstance(out, pl.DataFrame)
    assert out.shape == (len(images), 32)


def test_normalize_gives_unit_rows(clip_path, images):
    raw = VLMEmbeddingTransformer(clip_path, pooling="mean").fit_transform(images)
    unit = VLMEmbeddingTransformer(
        clip_path, pooling="mean", normalize=True
    ).fit_transform(images)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6
    )


def test_row_order_equivariance(clip_path):
    images = random_images(7, seed=3)
    vlm = VLMEmbeddingTransformer(clip_path, pooling="mean", batch_size=3).fit(None)
    order = np.random.default_rng(0).permutation(7)
    np.testing.assert_allclose(
        vlm.transform([images[i] for i in order]),
        vlm.transform(images)[order],
        atol=1e-5,
    )


def test_bfloat16_output_is_float32_and_close(clip_path, images):
    ref = VLMEmbeddingTransformer(clip_path, pooling="mean").fit_transform(images)
    low = VLMEmbeddingTransformer(
        clip_path, pooling="mean", dtype="bfloat16"
    ).fit_transform(images)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, ref, atol=0.1)


def test_progress_bar_is_shown_by_default(clip_path, images, capsys):
    VLMEmbeddingTransformer(clip_path, batch_size=2).fit_transform(images)
    assert "6/6" in capsys.readouterr().err
    VLMEmbeddingTransformer(clip_path, batch_size=2, verbose=0).fit_transform(images)
    assert capsys.readouterr().err == ""


def test_inside_grid_search_over_layers_and_poolings(clip_path):
    images = random_images(12, seed=5)
    y = np.arange(12) % 2
    pipe = Pipeline(
        [("vlm", VLMEmbeddingTransformer(clip_path)), ("clf", LogisticRegression())]
    )
    search = GridSearchCV(
        pipe, {"vlm__layer": [0, -1], "vlm__pooling": ["cls", "mean"]}, cv=2
    )
    search.fit(images, y)
    assert search.best_params_["vlm__layer"] in (0, -1)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


# -- errors ---------------------------------------------------------------------------


def test_layer_out_of_range_names_valid_range(clip_path):
    with pytest.raises(ValueError, match=re.escape("use a layer in [-4, 3]")):
        VLMEmbeddingTransformer(clip_path, layer=4).fit(None)


def test_pooling_unavailable_lists_valid_ones(clip_path, siglip_path):
    with pytest.raises(ValueError, match="available: 'mean', 'max', 'pooler'"):
        VLMEmbeddingTransformer(siglip_path, pooling="cls").fit(None)
    with pytest.raises(ValueError, match="'cls', 'mean', 'max'"):
        VLMEmbeddingTransformer(clip_path, layer=1, pooling="pooler").fit(None)
    with pytest.raises(ValueError, match="available: 'cls', 'mean', 'max'"):
        VLMEmbeddingTransformer(clip_path, pooling="last").fit(None)


def test_stage_unavailable_lists_stages(vit_path):
    with pytest.raises(ValueError, match=r"its stages are \['vision'\]"):
        VLMEmbeddingTransformer(vit_path, stage="projector").fit(None)


def test_invalid_param_values(clip_path):
    with pytest.raises(ValueError, match="stage"):
        VLMEmbeddingTransformer(clip_path, stage="decoder").fit(None)
    with pytest.raises(ValueError, match="batch_size"):
        VLMEmbeddingTransformer(clip_path, batch_size=0).fit(None)
    with pytest.raises(TypeError, match="layer entries must be ints"):
        VLMEmbeddingTransformer(clip_path, layer=[1, "2"]).fit(None)
    with pytest.raises(ValueError, match="empty list"):
        VLMEmbeddingTransformer(clip_path, layer=[]).fit(None)
    with pytest.raises(ValueError, match="dtype='float31' is not a torch dtype"):
        VLMEmbeddingTransformer(clip_path, dtype="float31").fit(None)


def test_missing_model_says_how_to_point_at_a_local_copy(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model") as info:
        VLMEmbeddingTransformer("no-such-org/no-such-model").fit(None)
    assert "save_pretrained" in str(info.value)


def test_unsupported_family_lists_supported_ones(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match="not supported by skvlm. Supported families: clip"
    ):
        VLMEmbeddingTransformer(tmp_path).fit(None)


def test_clear_model_cache_forces_reload(clip_path):
    a = VLMEmbeddingTransformer(clip_path).fit(None)
    first = a._extraction().adapter
    skvlm.clear_model_cache()
    assert a._extraction().adapter is not first


def test_batches_hold_similar_lengths_and_results_keep_their_rows(
    llava_path, monkeypatch
):
    """Rows are batched by prompt length (and image size); the output order is X's."""
    path = llava_path
    images = random_images(6, seed=9)
    prompts = ["What is it?", "Describe every detail of this photo please.", "Hi?"] * 2
    X = pd.DataFrame({"image": images, "prompt": prompts})
    vlm = VLMEmbeddingTransformer(path, stage="language", batch_size=2).fit(None)
    adapter = vlm._extraction().adapter
    seen = []
    prepare = adapter.prepare

    def spy(images, prompts=None):
        seen.append([len(p) for p in prompts])
        return prepare(images, prompts)

    monkeypatch.setattr(adapter, "prepare", spy)
    batched = vlm.transform(X)
    monkeypatch.setattr(adapter, "prepare", prepare)
    flat = [n for batch in seen for n in batch]
    assert flat == sorted(flat)  # each batch holds neighbours in length
    one_by_one = np.vstack([vlm.transform(X.iloc[[i]]) for i in range(len(X))])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_missing_device_is_a_clear_error(clip_path):
    with pytest.raises(ValueError, match="sees no CUDA GPU; use device='auto'"):
        VLMEmbeddingTransformer(clip_path, device="cuda").fit(None)
    with pytest.raises(ValueError, match="is not a torch device"):
        VLMEmbeddingTransformer(clip_path, device="gpu0").fit(None)


def test_fit_refuses_a_y_of_another_length(clip_path):
    images = random_images(3)
    with pytest.raises(ValueError, match="X has 3 images but y has 2 labels"):
        VLMEmbeddingTransformer(clip_path).fit(images, [0, 1])
    VLMEmbeddingTransformer(clip_path).fit(images, [0, 1, 0])
    VLMEmbeddingTransformer(clip_path).fit(
        None, [0, 1]
    )  # X not given: nothing to check
