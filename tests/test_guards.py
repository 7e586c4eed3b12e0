"""Checks around loading a model: real defaults, shipped-model notices, fit-time refusals.

References: HF's own ``output_hidden_states`` sequence lengths for the token bound,
and the estimators' signatures for the defaults.
"""

import inspect
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from skvlm import (
    CLIPZeroShotClassifier,
    ModelNotFoundError,
    VLMEmbeddingTransformer,
    VLMGenerativeClassifier,
)
from skvlm.models import EmbeddedModelWarning, _guards, load_adapter, max_tokens
from skvlm.testing import random_images


@pytest.fixture
def fresh_notices(monkeypatch):
    """Forget which shipped models were already noted in this process."""
    monkeypatch.setattr(_guards, "_NOTED", set())


@pytest.fixture
def offline(monkeypatch):
    """The hub unreachable at once, as on an offline machine (no network wait)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# -- defaults: real checkpoints (issue 15, item 8) ----------------------------------------
@pytest.mark.parametrize(
    "estimator, expected",
    [
        (VLMEmbeddingTransformer, "openai/clip-vit-base-patch32"),
        (CLIPZeroShotClassifier, "openai/clip-vit-base-patch32"),
        (VLMGenerativeClassifier, "llava-hf/llava-1.5-7b-hf"),
    ],
)
def test_defaults_are_real_checkpoints(estimator, expected):
    default = inspect.signature(estimator).parameters["model"].default
    assert default == expected == estimator().get_params()["model"]
    assert not default.startswith("skvlm/")


def test_offline_error_points_to_the_shipped_models(offline, fresh_notices):
    with pytest.raises(ModelNotFoundError) as info:
        VLMEmbeddingTransformer().fit(None)
    message = str(info.value)
    assert "openai/clip-vit-base-patch32" in message
    assert "'skvlm/tiny-clip'" in message and "'skvlm/tiny-llava'" in message
    with pytest.raises(ModelNotFoundError, match="skvlm/tiny-llava"):
        VLMGenerativeClassifier().fit(random_images(2), [0, 1])


def test_a_shipped_model_is_noted_once_per_process(fresh_notices):
    images = random_images(2)
    with pytest.warns(EmbeddedModelWarning, match="skvlm/tiny-clip is a tiny model"):
        VLMEmbeddingTransformer("skvlm/tiny-clip").fit_transform(images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbeddedModelWarning)
        VLMEmbeddingTransformer("skvlm/tiny-clip", layer=0).fit(None)
        CLIPZeroShotClassifier("skvlm/tiny-clip").fit(images, [0, 1])
    with pytest.warns(EmbeddedModelWarning, match="skvlm/tiny-llava.*llava-1.5-7b"):
        VLMEmbeddingTransformer("skvlm/tiny-llava").fit(None)


def test_a_model_of_ones_own_is_not_noted(clip_path, fresh_notices):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbeddedModelWarning)
        VLMEmbeddingTransformer(clip_path).fit(None)


# -- refused at fit (issue 15, item 5) -----------------------------------------------------
@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_meta_device_is_refused_at_fit(clip_path, device):
    for estimator in [
        VLMEmbeddingTransformer(clip_path, device=device),
        CLIPZeroShotClassifier(clip_path, device=device),
    ]:
        with pytest.raises(ValueError, match="holds tensor shapes but no data"):
            estimator.fit(random_images(2), [0, 1])


def _hf_sequence_length(path):
    """Tokens of the vision tower's hidden states, from HF's output_hidden_states."""
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    processor = getattr(processor, "image_processor", processor)
    pixels = processor(images=random_images(1), return_tensors="pt")
    with torch.no_grad():
        vision = getattr(model, "vision_model", model)
        out = vision(pixel_values=pixels["pixel_values"], output_hidden_states=True)
    return out.hidden_states[-1].shape[1]


@pytest.mark.parametrize("family", ["clip", "siglip", "vit", "dinov2"])
def test_token_bound_covers_the_real_sequence(
    family, clip_path, siglip_path, vit_path, dinov2_path
):
    path = {"clip": clip_path, "siglip": siglip_path, "vit": vit_path}.get(
        family, dinov2_path
    )
    bound = max_tokens(load_adapter(path, device="cpu"), "vision")
    tokens = _hf_sequence_length(path)
    assert tokens <= bound <= tokens + 1  # exact up to a CLS the tower may lack


def test_positions_past_every_sequence_fail_at_fit(clip_path):
    images = random_images(3)
    tokens = _hf_sequence_length(clip_path)  # 17: CLS + 4x4 patches
    for position in [999, -999, tokens, -tokens - 1]:
        with pytest.raises(ValueError, match="past every sequence.*at most 17 tokens"):
            VLMEmbeddingTransformer(clip_path, pooling=position).fit(None)
    # the last valid positions at both ends work, and are HF's tokens
    for position in [tokens - 1, -tokens]:
        vlm = VLMEmbeddingTransformer(clip_path, pooling=position, layer=-1)
        out = vlm.fit_transform(images)
        assert out.shape == (3, 32) and np.isfinite(out).all()


def test_language_stage_bound_is_the_language_model_context(fresh_notices):
    with pytest.warns(EmbeddedModelWarning):  # load_adapter notes shipped models
        adapter = load_adapter("skvlm/tiny-llava", device="cpu")
    context = adapter.model.config.get_text_config().max_position_embeddings
    assert max_tokens(adapter, "language") == context
    vlm = VLMEmbeddingTransformer("skvlm/tiny-llava", stage="language", pooling=context)
    with pytest.raises(ValueError, match=f"at most {context} tokens"):
        vlm.fit(None)
    VLMEmbeddingTransformer("skvlm/tiny-llava", stage="language", pooling=-1).fit(None)


# -- zero-shot class names that the tokenizer cannot tell apart (item 8) ------------------
def test_zero_shot_refuses_class_names_that_tokenize_alike(fresh_notices):
    images = random_images(3)
    clf = CLIPZeroShotClassifier(
        "skvlm/tiny-clip", class_names=["zebra", "okapi", "seven"]
    )
    with pytest.warns(EmbeddedModelWarning):
        with pytest.raises(ValueError, match="same prompts once tokenized") as info:
            clf.fit(images, [0, 1, 2])
    message = str(info.value)
    assert "0 ('zebra') and 1 ('okapi')" in message and "'<unk>'" in message
    assert "seven" not in message
    clf.set_params(class_names=["three", "five", "seven"]).fit(images, [0, 1, 2])


# -- HF's loading bars follow verbose (item 10) --------------------------------------------
@pytest.fixture
def bars_enabled():
    """transformers' bars on, as in a fresh process (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    if not was:
        hf_logging.disable_progress_bar()


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_loading_bars_show_only_at_verbose_2(clip_path, capsys, bars_enabled, verbose):
    from transformers.utils import logging as hf_logging

    from skvlm import clear_model_cache

    clear_model_cache()
    VLMEmbeddingTransformer(clip_path, verbose=verbose).fit(None)
    assert ("Loading weights" in capsys.readouterr().err) == (verbose >= 2)
    assert hf_logging.is_progress_bar_enabled()  # the setting is restored


# -- describe_sites: what a model offers, without its weights ------------------------------
def test_describe_sites_lists_exactly_what_fit_accepts(clip_path):
    from skvlm.models import describe_sites
    from skvlm.models._describe import _skeleton

    assert next(_skeleton(clip_path, {}).model.parameters()).device.type == "meta"
    sites = describe_sites(clip_path)
    images = random_images(2)
    adapter = load_adapter(clip_path, device="cpu")
    for stage, info in sites.attrs["stages"].items():
        assert info["n_layers"] == adapter.n_layers(stage)
    for row in sites.itertuples():
        vlm = VLMEmbeddingTransformer(
            clip_path, stage=row.stage, layer=row.layer, pooling=row.pooling
        )
        assert vlm.fit_transform(images).shape == (2, row.dim)
    # a pooling the table lacks at a layer is refused there
    vision = sites[sites.stage == "vision"]
    assert "pooler" not in set(vision[vision.layer == 0].pooling)
    with pytest.raises(ValueError, match="not available"):
        VLMEmbeddingTransformer(clip_path, layer=0, pooling="pooler").fit(None)
    hf_layers = AutoModel.from_pretrained(clip_path).config.vision_config
    assert (
        sites.attrs["stages"]["vision"]["n_layers"] == hf_layers.num_hidden_layers + 1
    )


# -- the shipped-model notice points at the user's line (issue 27, item 10) ---------------
def test_the_shipped_model_notice_points_at_the_users_line(fresh_notices):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    with pytest.warns(EmbeddedModelWarning) as record:
        VLMEmbeddingTransformer("skvlm/tiny-clip").fit(None)
    assert [w.filename for w in record] == [__file__]
    images, y = random_images(6), [0, 1] * 3
    pipe = make_pipeline(
        VLMEmbeddingTransformer("skvlm/tiny-llava"), LogisticRegression()
    )
    search = GridSearchCV(pipe, {"logisticregression__C": [1.0]}, cv=2)
    with pytest.warns(EmbeddedModelWarning) as record:
        search.fit(images, y)  # through sklearn's frames, still this line
    assert [w.filename for w in record] == [__file__]


def test_worker_processes_leave_the_notice_to_the_main_process(
    fresh_notices, monkeypatch
):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbeddedModelWarning)
        VLMEmbeddingTransformer("skvlm/tiny-clip").fit(None)


@pytest.mark.slow
def test_a_parallel_search_notes_a_shipped_model_once(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "search.py"
    script.write_text(
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.model_selection import GridSearchCV\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from skvlm import VLMEmbeddingTransformer\n"
        "from skvlm.testing import random_images\n"
        "pipe = make_pipeline(VLMEmbeddingTransformer('skvlm/tiny-clip'),"
        " LogisticRegression())\n"
        "grid = {'logisticregression__C': [0.1, 1.0]}\n"
        "search = GridSearchCV(pipe, grid, cv=2, n_jobs=2)\n"
        "search.fit(random_images(6), [0, 1] * 3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "always", str(script)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is a tiny model shipped with skvlm") == 1
    assert f"{script}:9: EmbeddedModelWarning" in result.stderr  # search.fit
