"""StoreFeatures: the features of some keys at a site, read from a store on demand."""

import pickle

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import LinearProbeClassifier
from skvlm.store import FeatureStore, StoreFeatures
from skvlm.testing import random_images

SITE, OTHER = "vision/l1/mean", "vision/l2/cls"


@pytest.fixture
def stored(tmp_path):
    """A disk store holding two sites for 30 keys, and the vectors written."""
    rng = np.random.default_rng(0)
    keys = [f"k{i:03d}" for i in range(30)]
    vectors = {
        SITE: rng.standard_normal((30, 5)).astype(np.float32),
        OTHER: rng.standard_normal((30, 3)).astype(np.float32),
    }
    store = FeatureStore(tmp_path / "store")
    store.write("ns", keys, vectors)
    return store, keys, vectors


def test_rows_are_the_written_vectors_for_every_kind_of_index(stored):
    store, keys, vectors = stored
    order = [5, 2, 29, 2, 0]  # any order, with a repeat
    features = StoreFeatures(store, "ns", [keys[i] for i in order], SITE)
    expected = vectors[SITE][order]
    assert features.shape == (5, 5) and len(features) == 5
    assert features.dtype == np.float32 and features.ndim == 2
    assert_array_equal(np.asarray(features), expected)
    assert_array_equal(features[1], expected[1])
    assert_array_equal(features[-1], expected[-1])
    assert_array_equal(features[1:4], expected[1:4])
    assert_array_equal(features[::-2], expected[::-2])
    assert_array_equal(features[np.array([4, 0, 0])], expected[[4, 0, 0]])
    mask = np.array([True, False, True, False, True])
    assert_array_equal(features[mask], expected[mask])
    assert_array_equal(features[1:3, 2], expected[1:3, 2])
    assert_array_equal(features[np.array([], dtype=int)], expected[:0])


def test_several_sites_concatenate_and_normalize_as_the_transformer(stored):
    store, keys, vectors = stored
    both = np.concatenate([vectors[OTHER], vectors[SITE]], axis=1)
    features = StoreFeatures(store, "ns", keys, [OTHER, SITE])
    assert_array_equal(features[:], both)
    unit = StoreFeatures(store, "ns", keys, [OTHER, SITE], normalize=True)
    norms = np.linalg.norm(both, axis=1, keepdims=True)
    np.testing.assert_allclose(unit[:], both / norms, rtol=1e-6)


def test_reads_only_the_rows_asked(stored, monkeypatch):
    store, keys, _ = stored
    features = StoreFeatures(store, "ns", keys, SITE)
    asked = []
    lookup = store.lookup

    def spy(namespace, wanted, sites):
        asked.append(list(wanted))
        return lookup(namespace, wanted, sites)

    monkeypatch.setattr(store, "lookup", spy)
    features[np.array([3, 7])]
    features[10:12]
    assert asked == [[keys[3], keys[7]], keys[10:12]]


def test_a_missing_key_names_the_row_and_the_fix(stored):
    store, keys, _ = stored
    features = StoreFeatures(store, "ns", [*keys[:3], "absent"], SITE)
    with pytest.raises(ValueError, match=r"row 3 \(key 'absent'\).*precompute"):
        features[2:]
    with pytest.raises(ValueError, match="row 0 .*'vision/l9/mean'"):
        StoreFeatures(store, "ns", keys, "vision/l9/mean")  # the width is read


@pytest.mark.parametrize(
    "args, error, message",
    [
        (("ns", [], SITE), ValueError, "keys is empty"),
        (("ns", ["k000", None], SITE), ValueError, r"keys\[1\] is None"),
        (("ns", "k000", SITE), TypeError, "sequence of str"),
        (("ns", ["k000"], []), ValueError, "site must be"),
    ],
)
def test_bad_arguments_are_named(stored, args, error, message):
    with pytest.raises(error, match=message):
        StoreFeatures(stored[0], *args)


def test_bad_indices_are_refused(stored):
    store, keys, _ = stored
    features = StoreFeatures(store, "ns", keys[:4], SITE)
    with pytest.raises(IndexError, match="row 4 is out of range"):
        features[4]
    with pytest.raises(IndexError, match="row -5 is out of range"):
        features[np.array([0, -5])]
    with pytest.raises(IndexError, match="boolean row mask"):
        features[np.array([True, False])]
    with pytest.raises(IndexError, match="rows or \\(rows, columns\\)"):
        features[0, 1, 2]
    with pytest.raises(ValueError, match="always a copy"):
        np.asarray(features, copy=False)


def test_a_path_opens_the_store_and_pickles_as_a_handle(stored):
    store, keys, vectors = stored
    features = StoreFeatures(str(store.path), "ns", keys, SITE)
    restored = pickle.loads(pickle.dumps(features))
    assert_array_equal(restored[:], vectors[SITE])
    assert "StoreFeatures(namespace='ns', site='vision/l1/mean'" in repr(features)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_stored_features_equal_transform_and_train_a_probe(clip_path, tmp_path):
    images = random_images(24, seed=3)
    y = np.arange(24) % 3
    for params in (
        dict(layer=[1, -1], pooling="cls", normalize=True),
        dict(layer=-1, pooling="mean"),
    ):
        vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s", **params)
        expected = vlm.fit(images).precompute(images, verbose=0).transform(images)
        features = vlm.stored_features(images)
        assert features.shape == expected.shape
        assert_array_equal(np.asarray(features), expected)
        assert_array_equal(features[5:9], expected[5:9])
    # A data frame's image column, as transform reads it.
    frame = pd.DataFrame({"img": images})
    vlm.set_params(image_column="img")
    assert_array_equal(np.asarray(vlm.stored_features(frame)), expected)
    # Its namespace, keys and site are where the store keeps the rows.
    assert features.sites == ["vision/l3/mean"]
    vectors, hit = FeatureStore.open(tmp_path / "s").lookup(
        features.namespace, features.keys, features.sites
    )
    assert hit.all()
    assert_array_equal(vectors["vision/l3/mean"], expected)

    probe = dict(solver="adam", batch_size=8, max_iter=3, device="cpu", random_state=0)
    streamed = LinearProbeClassifier(**probe).fit(features, y)
    in_memory = LinearProbeClassifier(**probe).fit(expected, y)
    for got, want in zip(streamed.coefs_, in_memory.coefs_, strict=True):
        assert_array_equal(got, want)
    assert_array_equal(streamed.predict(features), in_memory.predict(expected))


def test_stored_features_needs_a_filled_store(clip_path, tmp_path):
    images = random_images(3, seed=1)
    with pytest.raises(ValueError, match="cache is None"):
        VLMEmbeddingTransformer(clip_path).fit().stored_features(images)
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "empty").fit()
    with pytest.raises(ValueError, match="row 0 .*precompute"):
        vlm.stored_features(images)
