"""Renamed parameters still work for one release, with a FutureWarning (issue 20)."""

import numpy as np
import pytest

from skvlm import (
    CLIPZeroShotClassifier,
    VLMEmbeddingTransformer,
    VLMGenerativeClassifier,
)
from skvlm._deprecation import renamed_verbose
from skvlm.datasets import load_digit_images
from skvlm.testing import random_images


def test_renamed_verbose_translates_and_warns():
    assert renamed_verbose("deprecated", 2, where="f") == 2
    assert renamed_verbose(None, 0, where="f") == 0
    with pytest.warns(FutureWarning, match=r"f: `progress` was renamed.*verbose=1"):
        assert renamed_verbose(True, 0, where="f") == 1
    with pytest.warns(FutureWarning, match="verbose=0"):
        assert renamed_verbose(False, 1, where="f") == 0


@pytest.mark.parametrize("progress, shown", [(True, True), (False, False)])
def test_transformer_progress_warns_and_still_works(clip_path, capsys, progress, shown):
    images = random_images(3)
    vlm = VLMEmbeddingTransformer(clip_path, progress=progress)
    assert vlm.get_params()["progress"] is progress  # stored verbatim
    with pytest.warns(FutureWarning, match="VLMEmbeddingTransformer.*verbose="):
        vlm.fit(None)
    expected = VLMEmbeddingTransformer(clip_path, verbose=0).fit_transform(images)
    capsys.readouterr()
    np.testing.assert_array_equal(vlm.transform(images), expected)
    assert ("3/3" in capsys.readouterr().err) == shown


def test_precompute_progress_warns_and_still_works(clip_path, tmp_path, capsys):
    vlm = VLMEmbeddingTransformer(clip_path, cache=tmp_path / "s").fit(None)
    with pytest.warns(FutureWarning, match="precompute.*verbose=0"):
        vlm.precompute(random_images(2), progress=False)
    assert "2/2" not in capsys.readouterr().err
    vlm.precompute(random_images(3, seed=1))  # the estimator's verbose: a bar
    assert "3/3" in capsys.readouterr().err


def test_zero_shot_progress_warns_and_still_works(clip_path):
    digits = load_digit_images(n_class=2, n_per_class=2)
    old = CLIPZeroShotClassifier(clip_path, class_names=["cat", "dog"], progress=False)
    with pytest.warns(FutureWarning, match="CLIPZeroShotClassifier"):
        old.fit(digits.images, digits.target)
    new = CLIPZeroShotClassifier(clip_path, class_names=["cat", "dog"], verbose=0)
    new.fit(digits.images, digits.target)
    np.testing.assert_array_equal(
        old.decision_function(digits.images), new.decision_function(digits.images)
    )


def test_generative_progress_warns_and_still_works(llava_path):
    images, y = random_images(2), [0, 1]
    old = VLMGenerativeClassifier(llava_path, class_names=["cat", "dog"], progress=True)
    with pytest.warns(FutureWarning, match="VLMGenerativeClassifier"):
        old.fit(images, y)
    new = VLMGenerativeClassifier(llava_path, class_names=["cat", "dog"], verbose=0)
    np.testing.assert_array_equal(
        old.decision_function(images), new.fit(images, y).decision_function(images)
    )


def test_a_bad_progress_value_is_refused(clip_path):
    with pytest.raises(ValueError, match="'progress' parameter"):
        VLMEmbeddingTransformer(clip_path, progress="yes").fit(None)
