"""The families built from recipes: what they cannot offer says why, as the matrix does.

Their stages, classifiers and tuner run in the shared family tests
(``test_vlm_families.py``, ``test_family_classifiers.py``); here, each stage a
family cannot offer is refused when asked for, naming the family, the stage
and the reason that ``support_matrix()`` gives.
"""

import re

import pandas as pd
import pytest

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.models import support_matrix
from skvlm.testing import TINY_MODELS, make_tiny_vlm
from skvlm.testing._families_claimed import NOT_BUILT

from ._families import BY_NAME
from ._families_claimed import CLAIMED_ROWS

STAGES = ("vision", "projector", "language")
REFUSED = [
    pytest.param(name, stage, id=f"{name}-{stage}", marks=BY_NAME[name].marks)
    for name in CLAIMED_ROWS
    for stage in STAGES
    if stage not in TINY_MODELS[name].stages
]

#: The families without a language stage: no classifier, no tuner (TRAITS says why).
NO_LANGUAGE = [
    pytest.param(name, marks=BY_NAME[name].marks)
    for name in CLAIMED_ROWS
    if "language" not in TINY_MODELS[name].stages
]


@pytest.fixture(scope="module")
def matrix():
    return support_matrix().set_index("model_type")


@pytest.mark.parametrize("name, stage", REFUSED)
def test_a_stage_it_cannot_offer_says_why(built, matrix, name, stage):
    cell = matrix.loc[name, stage]
    assert cell.startswith("unsupported: ")
    reason = cell.removeprefix("unsupported: ")
    X = pd.DataFrame({"image": built.images(name), "prompt": built.prompts(name)})
    vlm = VLMEmbeddingTransformer(built.path(name), stage=stage, device="cpu")
    with pytest.raises(
        ValueError, match=rf"stage='{stage}'.*{name}.*{re.escape(reason)}"
    ):
        vlm.fit_transform(X if stage == "language" else X["image"])


@pytest.mark.parametrize("name", NO_LANGUAGE)
def test_a_family_without_language_stage_refuses_the_classifier(built, matrix, name):
    assert matrix.loc[name, "generative"].startswith("unsupported: ")
    clf = VLMGenerativeClassifier(
        built.path(name), class_names=["cat", "dog"], device="cpu"
    )
    reason = matrix.loc[name, "language"].removeprefix("unsupported: ")
    with pytest.raises(ValueError, match=rf"{name}.*{re.escape(reason)}"):
        clf.fit(built.images(name)[:2], [0, 1])


def test_unknown_type_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="no tiny recipe.*'aria'"):
        make_tiny_vlm(tmp_path, "blip")


def test_the_types_without_a_recipe_are_claimed_untested(matrix):
    assert not set(NOT_BUILT) & set(TINY_MODELS)
    for model_type in NOT_BUILT:
        assert matrix.loc[model_type, "language"] == "claimed", model_type


@pytest.mark.parametrize("name", NO_LANGUAGE)
def test_the_tuner_says_why_it_cannot_train_a_family(built, matrix, tmp_path, name):
    from skvlm.tuning import VLMClassificationTuner

    reason = matrix.loc[name, "tuner"].removeprefix("unsupported: ")
    tuner = VLMClassificationTuner(
        built.path(name), class_names=["cat", "dog"], output_dir=tmp_path
    )
    with pytest.raises(ValueError, match=rf"{name}.*{re.escape(reason)}"):
        tuner.fit(built.images(name)[:2], ["cat", "dog"])
