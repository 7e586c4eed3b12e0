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


def test_a_family_without_language_stage_refuses_the_classifier(built, matrix):
    assert matrix.loc["qwen4_exp", "generative"].startswith("unsupported: ")
    clf = VLMGenerativeClassifier(
        built.path("qwen4_exp"), class_names=["cat", "dog"], device="cpu"
    )
    reason = matrix.loc["qwen4_exp", "language"].removeprefix("unsupported: ")
    with pytest.raises(ValueError, match=rf"qwen4_exp.*{re.escape(reason)}"):
        clf.fit(built.images("qwen4_exp")[:2], [0, 1])


def test_unknown_type_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="no tiny recipe.*'aria'"):
        make_tiny_vlm(tmp_path, "blip")


def test_the_types_without_a_recipe_are_claimed_untested(matrix):
    assert not set(NOT_BUILT) & set(TINY_MODELS)
    for model_type in NOT_BUILT:
        assert matrix.loc[model_type, "language"] == "claimed", model_type


def test_the_tuner_says_why_it_cannot_train_a_family(built, matrix, tmp_path):
    from skvlm.tuning import VLMClassificationTuner

    reason = matrix.loc["qwen4_exp", "tuner"].removeprefix("unsupported: ")
    tuner = VLMClassificationTuner(
        built.path("qwen4_exp"), class_names=["cat", "dog"], output_dir=tmp_path
    )
    with pytest.raises(ValueError, match=rf"qwen4_exp.*{re.escape(reason)}"):
        tuner.fit(built.images("qwen4_exp")[:2], ["cat", "dog"])


# -- encdec --
@pytest.mark.parametrize("column", ["generative", "tuner"])
def test_a_block_diffusion_model_refuses_to_score_or_train(
    built, matrix, column, tmp_path
):
    # DiffusionGemma's language stage is served (its encoder), but its decoder
    # gives no left-to-right probability of an answer
    from skvlm.tuning import VLMClassificationTuner

    name = "diffusion_gemma"
    reason = matrix.loc[name, column].removeprefix("unsupported: ")
    assert "block diffusion" in reason
    if column == "generative":
        estimator = VLMGenerativeClassifier(
            built.path(name), class_names=["cat", "dog"], device="cpu"
        )
        y = [0, 1]
    else:
        estimator = VLMClassificationTuner(
            built.path(name), class_names=["cat", "dog"], output_dir=tmp_path
        )
        y = ["cat", "dog"]
    with pytest.raises(ValueError, match=rf"{name}.*{re.escape(reason)}"):
        estimator.fit(built.images(name)[:2], y)
