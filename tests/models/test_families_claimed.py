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
#: Every stage a tiny VLM's family refuses (hand-built families' too: Fuyu's
#: vision stage).
REFUSED = [
    pytest.param(name, stage, id=f"{name}-{stage}", marks=BY_NAME[name].marks)
    for name, tiny in TINY_MODELS.items()
    if tiny.kind == "vlm"
    for stage in STAGES
    if stage not in tiny.stages
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
def test_a_family_without_language_stage_still_answers(matrix, name):
    # the classifier and the tuner read the model's logits, not a stage's
    # hidden states (test_family_classifiers runs them on these families)
    assert matrix.loc[name, "language"].startswith("unsupported: ")
    assert matrix.loc[name, "generative"] == "tested"
    assert matrix.loc[name, "tuner"] == "tested"


def test_unknown_type_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="no tiny recipe.*'aria'"):
        make_tiny_vlm(tmp_path, "blip")


def test_only_the_types_not_built_yet_are_claimed_untested(matrix):
    # every other row's cells are tested, or unsupported with a reason
    assert not set(NOT_BUILT) & set(TINY_MODELS)
    cells = matrix.drop(columns="kind")
    claimed = set(matrix.index[(cells == "claimed").any(axis=1)])
    assert claimed == set(NOT_BUILT)
    for model_type in NOT_BUILT:
        assert matrix.loc[model_type, "language"] == "claimed", model_type


@pytest.mark.parametrize(
    "name, streams", [("glm5_next", 2), ("hy_v4_vl", 2), ("qwen4_exp", 4)]
)
def test_hyper_connection_entries_hold_every_stream(built, name, streams):
    # before the last language entry, a block's output is its residual streams
    # side by side (the family tests compare them with HF's hidden_states);
    # the last entry is after their merge and the final norm
    from skvlm.models import load_adapter

    adapter = load_adapter(built.path(name), device="cpu")
    config = adapter.model.config.get_text_config()
    width = config.hidden_size
    dims = adapter.dims("language")
    assert adapter.traits.streams == streams
    assert dims == (streams * width,) * config.num_hidden_layers + (width,)
    X = pd.DataFrame({"image": built.images(name)[:2], "prompt": ["a", "b"]})
    vlm = VLMEmbeddingTransformer(
        built.path(name), stage="language", layer=[0, -1], pooling="mean", device="cpu"
    )
    assert vlm.fit_transform(X).shape == (2, streams * width + width)


def test_hunyuan_vl_hf_numbers_images_over_the_batch(built):
    # Why skvlm computes HunYuanVL's positions row by row (Traits.row_positions):
    # HF's own get_rope_index numbers the image-index axis over the whole batch,
    # so the image of row i gets index i, where alone it gets 0 (as its docs
    # say: the ordinal of the image in the sequence); rows after the first then
    # differ from the same example run alone. The family tests compare skvlm
    # with HF one example at a time, the exact way.
    import torch

    hf = built.hf("hunyuan_vl")
    images = built.images("hunyuan_vl")[:2]
    text = hf.processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "a"}],
            }
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    kwargs = dict(return_tensors="pt", padding=True, return_mm_token_type_ids=True)
    batch = hf.processor(images=images, text=[text] * 2, **kwargs)
    names = ("input_ids", "mm_token_type_ids", "image_grid_thw", "attention_mask")
    alone = hf.processor(images=images[1:], text=[text], **kwargs)
    together = hf.model.model.get_rope_index(*(batch[k] for k in names))[0]
    single = hf.model.model.get_rope_index(*(alone[k] for k in names))[0]
    n = single.shape[-1]
    shift = together[:, 1, -n:] - single[:, 0]  # row 1, left-padded, against alone
    assert shift[:-1].eq(0).all()  # the other axes agree
    assert set(shift[-1].unique().tolist()) == {0, 1}  # its image counted as the 2nd
    with torch.no_grad():
        batched = hf.model.model(**batch, use_cache=False).last_hidden_state[1]
        one = hf.model.model(**alone, use_cache=False).last_hidden_state[0]
    assert (batched[-n:] - one).abs().max() > 1e-5


def test_hunyuan_vl_rows_are_positioned_alone_in_extraction_and_training(built):
    # the language stage and the tuner's prompt + answer rows take, per row, the
    # positions HF gives that row alone (its own prompt, image and answer)
    import torch

    from skvlm.models import load_adapter
    from skvlm.tuning._batches import generation_batch

    adapter = load_adapter(built.path("hunyuan_vl"), device="cpu")
    images = built.images("hunyuan_vl")[:3]
    prompts = [adapter.format_prompt(p) for p in ("a", "a cat", "is it a dog ?")]
    answers = [[5], [5, 6], [7]]
    batch = generation_batch(adapter, images, prompts, answers).inputs
    base = adapter.model.model
    for i, (image, prompt, answer) in enumerate(
        zip(images, prompts, answers, strict=True)
    ):
        alone = generation_batch(adapter, [image], [prompt], [answer]).inputs
        want = base.compute_3d_position_ids(
            input_ids=alone["input_ids"],
            image_grid_thw=alone["image_grid_thw"],
            attention_mask=alone["attention_mask"],
            mm_token_type_ids=alone["mm_token_type_ids"],
        )
        n = want.shape[-1]
        torch.testing.assert_close(batch["position_ids"][:, i, -n:], want[:, 0])
    with torch.no_grad():
        prepared = adapter.prepare(images, prompts)
        positions = adapter.row_positions(prepared)
        hf = base.compute_3d_position_ids(
            input_ids=prepared["input_ids"],
            image_grid_thw=prepared["image_grid_thw"],
            attention_mask=prepared["attention_mask"],
            mm_token_type_ids=prepared["mm_token_type_ids"],
        )
    valid = prepared["attention_mask"].bool()
    assert not torch.equal(positions[:, valid], hf[:, valid])  # HF's, batched
    assert torch.equal(positions[:, 0], hf[:, 0])  # the first row agrees


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


@pytest.mark.parametrize(
    "name", [pytest.param("lfm2_vl", marks=BY_NAME["lfm2_vl"].marks)]
)
def test_lfm2_vl_tiles_pool_per_image(built, extract, tmp_path, name):
    # With do_image_splitting a large image becomes tiles and a thumbnail, one
    # tower row each; its vision tokens are the real patches of all its rows,
    # in order, as HF's own tower gives them on that image alone.
    import json
    import shutil

    import numpy as np
    import torch
    from PIL import Image

    from ._references import HF

    path = tmp_path / name
    shutil.copytree(built.path(name), path)
    config = json.loads((path / "processor_config.json").read_text())
    config["image_processor"]["do_image_splitting"] = True
    (path / "processor_config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(90, 200), (40, 30), (120, 120), (64, 48)]
    ]
    hf = HF(path)
    tower = hf.model.model.vision_tower
    rows = []
    expected = {"mean": [], "max": []}
    for image in images:
        inputs = dict(
            hf.processor.image_processor(images=[[image]], return_tensors="pt")
        )
        real = inputs["pixel_attention_mask"].bool()
        rows.append(len(real))
        with torch.no_grad():
            state = tower(**inputs, output_hidden_states=True).hidden_states[2]
        tokens = state[real].numpy()  # every row's real patches, row after row
        expected["mean"].append(tokens.mean(0))
        expected["max"].append(tokens.max(0))
    assert rows[0] > 2 and rows[1] == 1  # tiles and a thumbnail; one row
    for pooling, want in expected.items():
        got = extract(path, "vision", pooling, images, layer=2, batch_size=4)
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-4, atol=1e-5)
