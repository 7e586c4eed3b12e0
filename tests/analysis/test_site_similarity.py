"""site_similarity over a tiny CLIP's sites and two models, against CKA computed
here from each site's own transformer output."""

import numpy as np
import pytest

from skvlm import VLMEmbeddingTransformer
from skvlm.analysis import SiteSimilarity, site_similarity
from skvlm.testing import make_tiny_clip, random_images


def _linear_cka(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (
        np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    )


@pytest.fixture(scope="module")
def clip_paths(tmp_path_factory):
    return [make_tiny_clip(tmp_path_factory.mktemp(f"clip{s}"), seed=s) for s in (0, 1)]


@pytest.fixture(scope="module")
def images():
    return random_images(12)


def _features(path, images, stage, layer, pooling):
    vlm = VLMEmbeddingTransformer(path, stage=stage, layer=layer, pooling=pooling)
    return vlm.fit_transform(images).astype(np.float64)


def test_sites_of_one_model(clip_paths, images):
    vlm = VLMEmbeddingTransformer(clip_paths[0])
    sites = ["vision/l1/mean", ("vision", 3, "cls"), "vision/l-1/mean"]
    result = site_similarity(vlm, images, sites)
    assert result.rows == ["vision/l1/mean", "vision/l3/cls", "vision/l3/mean"]
    feats = [
        _features(clip_paths[0], images, "vision", 1, "mean"),
        _features(clip_paths[0], images, "vision", 3, "cls"),
        _features(clip_paths[0], images, "vision", 3, "mean"),
    ]
    expected = [[_linear_cka(a, b) for b in feats] for a in feats]
    np.testing.assert_allclose(result.matrix, expected, rtol=1e-4)
    frame = result.to_frame()
    assert frame.loc["vision/l1/mean", "vision/l3/cls"] == result.matrix[0, 1]


def test_all_sites_by_default(clip_paths, images):
    with pytest.warns(RuntimeWarning, match="does not vary"):
        # The CLS token before the first block is the same for every image.
        result = site_similarity(VLMEmbeddingTransformer(clip_paths[0]), images[:6])
    # 4 entries of the tiny CLIP's vision stack, each with cls, mean and max,
    # and the pooler at the last layer.
    assert len(result.rows) == result.matrix.shape[0] == result.matrix.shape[1]
    assert "vision/l0/mean" in result.rows and "vision/l3/pooler" in result.rows
    cls0 = result.rows.index("vision/l0/cls")
    assert np.isnan(result.matrix[cls0]).all()
    diagonal = np.delete(np.diag(result.matrix), cls0)
    np.testing.assert_allclose(diagonal, 1.0, rtol=1e-5)


def test_two_models(clip_paths, images):
    a = VLMEmbeddingTransformer(clip_paths[0], layer=2, pooling="mean")
    b = VLMEmbeddingTransformer(clip_paths[1], pooling="mean")
    result = site_similarity(a, images, [a], other=b, other_sites=["vision/l1/mean", b])
    name0, name1 = (str(p).rstrip("/").split("/")[-1] for p in clip_paths)
    assert result.rows == [f"{name0}:vision/l2/mean"]
    assert result.columns == [f"{name1}:vision/l1/mean", f"{name1}:vision/l3/mean"]
    x = _features(clip_paths[0], images, "vision", 2, "mean")
    expected = [
        _linear_cka(x, _features(clip_paths[1], images, "vision", layer, "mean"))
        for layer in (1, 3)
    ]
    np.testing.assert_allclose(result.matrix[0], expected, rtol=1e-4)


def test_rsa_measure_and_plot():
    pytest.importorskip("rsatoolbox")
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(15, 4))
    result = site_similarity({"a": a, "b": a @ rng.normal(size=(4, 6))}, measure="rsa")
    assert isinstance(result, SiteSimilarity)
    assert result.measure == "RSA (correlation RDM, spearman)"
    assert result.matrix[0, 0] == pytest.approx(1.0)
    ax = result.plot()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.get_title() == result.measure


def test_bad_arguments(clip_paths, images):
    vlm = VLMEmbeddingTransformer(clip_paths[0])
    with pytest.raises(ValueError, match="measure='svcca'"):
        site_similarity({"a": np.eye(3)}, measure="svcca")
    with pytest.raises(TypeError, match="VLMEmbeddingTransformer"):
        site_similarity([np.eye(3)])
    with pytest.raises(ValueError, match="needs X"):
        site_similarity(vlm)
    with pytest.raises(TypeError, match="sites entry 3"):
        site_similarity(vlm, images, [3])
