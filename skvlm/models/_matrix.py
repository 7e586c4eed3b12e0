"""Which model types skvlm serves, per stage, classifier and tuner, from the code.

Each cell is ``"tested"`` (a tiny checkpoint of the type is registered in
:data:`skvlm.testing.TINY_MODELS`, and the family tests compare that stage with
HF's own outputs at batch sizes 1 and 4, or run that classifier), ``"claimed"``
(an adapter serves the type and the stage is expected to work, but no test
runs it: check it once against the model's ``output_hidden_states``),
``"unsupported: <reason>"`` or ``"n/a"``. Nothing here is written by hand: the
rows are the installed transformers' image-text-to-text mapping, the model
types of skvlm's other VLM adapters and those of its vision and CLIP adapters; the cells come from the adapters,
the family traits and the tiny-model registry.
"""

from __future__ import annotations

COLUMNS = (
    "model_type",
    "kind",
    "vision",
    "projector",
    "language",
    "zero_shot",
    "generative",
    "tuner",
)
_STAGES = ("vision", "projector", "language")
_NO_IMAGE_TOKEN = (
    "unsupported: its config has no image token id, so skvlm cannot tell "
    "which positions of the prompt hold the image"
)


def _vision_kinds(classes):
    """``{model_type: (kind, adapter class)}`` of the vision and CLIP adapters."""
    out = {}
    for cls in classes:
        if getattr(cls, "fallback", False) or "language" in cls.stages:
            continue
        for model_type in cls.model_types:
            clip = hasattr(cls, "encode_text") and not model_type.endswith(
                "_vision_model"
            )
            out[model_type] = "clip" if clip else "vision"
    return out


def _other_vlms(classes):
    """Model types of VLM adapters outside the image-text-to-text mapping
    (Phi-4-multimodal, which transformers loads as a causal LM)."""
    return {
        model_type
        for cls in classes
        if not getattr(cls, "fallback", False) and "language" in cls.stages
        for model_type in cls.model_types
    }


def _packed_reason(model_type):
    """Why a packed tower's vision stage is refused, from the model class alone."""
    from ._packed import NO_GRID
    from ._traits import takes_patch_grid

    if takes_patch_grid(_model_class(model_type)):
        return None  # split per image by its grid (skvlm.models._packed)
    return NO_GRID


def _model_class(model_type):
    """The image-text-to-text model class transformers maps ``model_type`` to."""
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    return getattr(transformers, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type])


def _generic_cells(model_type, generic):
    """Cells of a type only the generic adapter could serve, without loading it."""
    from transformers import CONFIG_MAPPING

    from ._traits import NOT_SERVED, PACKED_TOWERS, TRAITS

    try:
        config = CONFIG_MAPPING[model_type]()
        # a default config may leave the image token unset (None) where every
        # checkpoint sets it: the attribute is what tells
        supported = generic.supports(config) or any(
            hasattr(config, name) for name in ("image_token_id", "image_token_index")
        )
    except Exception as exc:  # a config that cannot be built from defaults
        return dict.fromkeys(
            (*_STAGES, "generative", "tuner"),
            f"unsupported: its default config does not build ({type(exc).__name__})",
        )
    traits = TRAITS.get(model_type)
    if not supported:
        reason = NOT_SERVED.get(model_type)
        cell = f"unsupported: {reason}" if reason else _NO_IMAGE_TOKEN
        return dict.fromkeys((*_STAGES, "generative", "tuner"), cell)
    reasons = dict(traits.unsupported) if traits else {}
    tower = getattr(getattr(config, "vision_config", None), "model_type", None)
    if traits is not None and traits.views == "packed" and tower not in PACKED_TOWERS:
        reason = _packed_reason(model_type)
        if reason is not None:
            reasons.setdefault("vision", reason)
    cells = {
        stage: f"unsupported: {reasons[stage]}" if stage in reasons else "claimed"
        for stage in _STAGES
    }
    for column in ("generative", "tuner"):
        cells[column] = (
            f"unsupported: {reasons[column]}" if column in reasons else "claimed"
        )
    return cells


def _vlm_cells(model_type, classes, tiny):
    from ._generic import GenericImageTextAdapter

    family = next(
        (c for c in classes if model_type in getattr(c, "model_types", ())), None
    )
    if family is not None:
        from ._traits import TRAITS

        traits = TRAITS.get(model_type)
        reasons = dict(traits.unsupported) if traits else {}
        cells = {
            stage: f"unsupported: {reasons[stage]}"
            if stage in reasons
            else ("claimed" if stage in family.stages else "unsupported: no stage")
            for stage in _STAGES
        }
        for column in ("generative", "tuner"):
            cells[column] = (
                f"unsupported: {reasons[column]}" if column in reasons else "claimed"
            )
    else:
        cells = _generic_cells(model_type, GenericImageTextAdapter)
    if tiny is not None:
        for stage in _STAGES:
            if stage in tiny.stages:
                cells[stage] = "tested"
        if tiny.classifiers:  # a column its traits refuse stays refused
            for column in ("generative", "tuner"):
                if not cells[column].startswith("unsupported"):
                    cells[column] = "tested"
    # zero-shot through the type's retrieval checkpoints, if served
    cells["zero_shot"] = _retrieval_cell(model_type, classes)
    return cells


def _retrieval_cell(model_type, classes):
    """A VLM type's zero-shot cell: its retrieval checkpoints' (an adapter
    chosen by architecture, skvlm.models._itm), else n/a."""
    from ..testing import RETRIEVAL_MODELS

    if model_type in RETRIEVAL_MODELS:
        return "tested"
    served = any(
        getattr(c, "architectures", ()) and c.family == model_type for c in classes
    )
    return "claimed" if served else "n/a"


def _vision_cells(kind, tiny):
    cells = {
        "vision": "claimed",
        "projector": "claimed" if kind == "clip" else "n/a",
        "language": "n/a",
        "zero_shot": "claimed" if kind == "clip" else "n/a",
        "generative": "n/a",
        "tuner": "n/a",
    }
    if tiny is not None:
        for stage in ("vision", "projector"):
            if stage in tiny.stages:
                cells[stage] = "tested"
        if tiny.classifiers and kind == "clip":
            cells["zero_shot"] = "tested"
    return cells


def _image_types():
    """``{model_type: kind}`` of transformers' image-feature-extraction and
    zero-shot image-classification mappings."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_MAPPING_NAMES,
        MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    kinds = dict.fromkeys(MODEL_FOR_IMAGE_MAPPING_NAMES, "vision")
    kinds.update(
        dict.fromkeys(MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES, "clip")
    )
    return kinds


def _unserved_vision_rows(listed):
    """Rows of the image types no adapter serves, each with its reason."""
    from ._traits import VISION_NOT_SERVED

    rows = []
    for model_type, kind in sorted(_image_types().items()):
        if model_type in listed:
            continue
        reason = VISION_NOT_SERVED.get(model_type, "no adapter serves it")
        cell = f"unsupported: {reason}"
        clip = kind == "clip"
        rows.append(
            {
                "model_type": model_type,
                "kind": kind,
                "vision": cell,
                "projector": cell if clip else "n/a",
                "language": "n/a",
                "zero_shot": cell if clip else "n/a",
                "generative": "n/a",
                "tuner": "n/a",
            }
        )
    return rows


def support_matrix():
    """What skvlm serves for every model type of the installed transformers.

    One row per model type of transformers' image-text-to-text mapping and of
    skvlm's other VLM adapters (``kind="vlm"``), and per model type of skvlm's vision-encoder and
    CLIP-style adapters and of transformers' image-feature-extraction and
    zero-shot image-classification mappings (``"vision"``, ``"clip"``; the
    types no adapter serves say why in every cell). Columns ``vision``,
    ``projector`` and ``language`` (the stages), ``zero_shot``, ``generative``
    (``VLMGenerativeClassifier``) and ``tuner`` (``VLMClassificationTuner``)
    hold ``"tested"`` (the family tests run it on a tiny checkpoint, exact
    against HF at batch sizes 1 and 4), ``"claimed"`` (expected to work,
    untested: a stage that fails says so at load time, naming the family and
    the stage), ``"unsupported: <reason>"`` or ``"n/a"``.

    Returns
    -------
    matrix : pandas.DataFrame
        Sorted by kind, then model type.

    Examples
    --------
    >>> from skvlm.models import support_matrix
    >>> matrix = support_matrix().set_index("model_type")
    >>> matrix.loc["gemma3", ["vision", "projector", "language", "tuner"]].tolist()
    ['tested', 'tested', 'tested', 'tested']
    >>> matrix.loc["clip", "zero_shot"]
    'tested'
    """
    import pandas as pd
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    from ..testing import TINY_MODELS
    from ._registry import adapter_classes

    classes = adapter_classes()
    vision = _vision_kinds(classes)
    rows = []
    for model_type in sorted(
        set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES) | _other_vlms(classes)
    ):
        cells = _vlm_cells(model_type, classes, TINY_MODELS.get(model_type))
        rows.append({"model_type": model_type, "kind": "vlm", **cells})
    for model_type, kind in sorted(vision.items(), key=lambda kv: (kv[1], kv[0])):
        cells = _vision_cells(kind, TINY_MODELS.get(model_type))
        rows.append({"model_type": model_type, "kind": kind, **cells})
    listed = {row["model_type"] for row in rows}
    rows += _unserved_vision_rows(listed)
    matrix = pd.DataFrame(rows, columns=list(COLUMNS))
    order = {"vlm": 0, "clip": 1, "vision": 2}
    return matrix.sort_values(
        ["kind", "model_type"], key=lambda s: s.map(order) if s.name == "kind" else s
    ).reset_index(drop=True)
