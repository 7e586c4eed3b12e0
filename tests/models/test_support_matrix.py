"""support_matrix() agrees with the family tests, and its docs page is current."""

import importlib.util
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)

from skvlm import VLMEmbeddingTransformer
from skvlm.models import TRAITS, Traits, clear_model_cache, load_adapter, support_matrix
from skvlm.testing import CLAIMED_RECIPES, TINY_MODELS

from ._families import BY_NAME, FAMILIES, NEEDS_TORCHVISION, NEW_FAMILIES
from .test_backbones import TYPES as BACKBONE_TYPES
from .test_backbones2 import CLIP_STYLE as BACKBONES2_CLIP
from .test_backbones2 import DETECTORS
from .test_backbones2 import KINDS as BACKBONES2_KINDS
from .test_encoders import CLIP_STYLE as ENCODER_CLIP_STYLE
from .test_encoders import KINDS as ENCODER_KINDS
from .test_family_classifiers import CLASSIFIED, TUNED, ZERO_SHOT
from .test_itm import TYPES as ITM_TYPES
from .test_videoprism import TYPES as VIDEOPRISM_KINDS

ROOT = Path(__file__).resolve().parents[2]
CELLS = ("vision", "projector", "language", "zero_shot", "generative", "tuner")


@pytest.fixture(scope="module")
def matrix():
    return support_matrix()


def test_rows_and_cells(matrix):
    assert list(matrix.columns) == ["model_type", "kind", *CELLS]
    vlm = set(matrix.loc[matrix.kind == "vlm", "model_type"])
    # Phi-4-multimodal: a VLM that transformers maps to causal LM, not here
    assert vlm == set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES) | {"phi4_multimodal"}
    assert matrix.model_type.is_unique
    assert set(matrix.kind) == {"vlm", "vision", "clip"}
    for value in matrix[list(CELLS)].to_numpy().ravel():
        assert value in ("tested", "claimed", "n/a") or value.startswith(
            "unsupported: "
        ), value


def test_tested_cells_are_exactly_what_the_family_tests_run(matrix):
    covered = {
        (family.type, stage)
        for family in FAMILIES + NEW_FAMILIES
        for stage in family.poolings
    }
    covered |= {(t, "generative") for t in CLASSIFIED}
    covered |= {(t, "tuner") for t in TUNED}
    covered |= {(t, "zero_shot") for t in ZERO_SHOT}
    covered |= {(t, "vision") for t in ENCODER_KINDS}
    covered |= {(t, "vision") for t in (*BACKBONE_TYPES, "dpt")}
    covered |= {(t, "vision") for t in [*BACKBONES2_KINDS, *DETECTORS]}  # backbones2
    covered |= {(t, c) for t in BACKBONES2_CLIP for c in ("projector", "zero_shot")}
    covered |= {(t, c) for t in ENCODER_CLIP_STYLE for c in ("projector", "zero_shot")}
    covered |= {(t, "vision") for t in VIDEOPRISM_KINDS}
    covered |= {("videoprism", c) for c in ("projector", "zero_shot")}
    # the retrieval checkpoints' zero-shot (test_itm.py)
    covered |= {(t, "zero_shot") for t in ITM_TYPES}
    tested = {
        (row["model_type"], column)
        for row in matrix.to_dict("records")
        for column in CELLS
        if row[column] == "tested"
    }
    assert tested == covered


@pytest.mark.parametrize(
    "model_type",
    [
        pytest.param(
            t, marks=(NEEDS_TORCHVISION,) if TINY_MODELS[t].torchvision else ()
        )
        for t in sorted(
            set(TINY_MODELS)
            - set(ENCODER_KINDS)
            - {*BACKBONE_TYPES, "dpt"}
            - set(BACKBONES2_KINDS)
            - set(DETECTORS)
            - set(VIDEOPRISM_KINDS)
        )
    ],
)
def test_registered_stages_are_the_adapters(built, model_type):
    name = {"blip-2": "blip2"}.get(model_type, model_type)
    assert BY_NAME[name].build is TINY_MODELS[model_type].build or model_type in (
        "dinov2",
    )
    adapter = load_adapter(built.path(name), device="cpu")
    assert adapter.model.config.model_type == model_type
    assert tuple(adapter.stages) == TINY_MODELS[model_type].stages


def test_committed_page_is_current():
    import transformers

    page = (ROOT / "docs" / "user_guide" / "support_matrix.rst").read_text()
    if f"transformers ({transformers.__version__})" not in page:
        pytest.skip(
            "the page lists the model types of the locked transformers; this "
            f"environment has {transformers.__version__} (make test-oldest/latest)"
        )
    spec = importlib.util.spec_from_file_location(
        "support_matrix_script", ROOT / "scripts" / "support_matrix.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.PAGE.read_text() == script.render(), (
        "docs/user_guide/support_matrix.rst is stale: run "
        "python scripts/support_matrix.py"
    )


def test_a_stage_the_family_does_not_allow_says_why(built, matrix, monkeypatch):
    # A stage declared unsupported in TRAITS: the matrix gives the reason for a
    # type the generic adapter serves, and loading refuses the stage, naming
    # the family, the stage and the reason (here a family adapter's type).
    reason = "the reason written in its traits"
    # a type built from a recipe (the generic adapter serves it), its tiny
    # checkpoint unregistered so that the matrix reads its traits alone
    model_type = next(
        name for name, recipe in sorted(CLAIMED_RECIPES.items()) if recipe.stages
    )
    monkeypatch.delitem(TINY_MODELS, model_type)
    for name in (model_type, "mllama"):
        declared = replace(TRAITS.get(name, Traits()), unsupported={"vision": reason})
        monkeypatch.setitem(TRAITS, name, declared)
    row = support_matrix().set_index("model_type").loc[model_type]
    assert row["vision"] == f"unsupported: {reason}"
    clear_model_cache()  # the adapter reads its traits when it loads
    try:
        vlm = VLMEmbeddingTransformer(
            built.path("mllama"), stage="vision", device="cpu"
        )
        with pytest.raises(ValueError, match=rf"stage='vision'.*mllama.*{reason}"):
            vlm.fit_transform(pd.Series(built.images("mllama")))
    finally:
        clear_model_cache()


def test_types_skvlm_does_not_serve_say_why_in_matrix_and_at_load():
    # no image placeholder in their prompts, or no image at all: each column
    # and the loading error give the type's own reason
    from transformers import CONFIG_MAPPING

    from skvlm.models._registry import adapter_class
    from skvlm.models._traits import NOT_SERVED

    matrix = support_matrix().set_index("model_type")
    columns = ["vision", "projector", "language", "generative", "tuner"]
    for model_type, reason in NOT_SERVED.items():
        assert set(matrix.loc[model_type, columns]) == {f"unsupported: {reason}"}
        with pytest.raises(ValueError, match=re.escape(reason)):
            adapter_class(CONFIG_MAPPING[model_type]())
