"""IDEFICS (v1) beyond the family matrix (test_vlm_families.py).

Its processor takes a prompt as a list of text and images; skvlm cuts the
prompt at its ``<image>`` placeholder. The probabilistic scorer caches the
prompt and hands each pass over the cache the image's states (its
cross-attention layers cache nothing). A checkpoint without the perceiver
resampler (``use_resampler=False``) gives the tower's output as its projector
stage, which is what its cross-attention layers read; the tuner then trains
the cross-attention layers as its projector.
"""

import numpy as np
import pytest
import torch

from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.classifiers._generative_scoring import image_prefix
from skvlm.models import load_adapter
from skvlm.testing import make_tiny_idefics
from skvlm.tuning import VLMClassificationTuner

from ._references import expected
from ._references_idefics1 import idefics1_reference
from .test_family_classifiers import ANSWER, NAMES, PROMPT, _naive_scores

NAME = "idefics"


def test_prompt_is_cut_at_its_placeholder(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    image = built.images(NAME)[0]
    # HF's own list form: the processor writes the image's tokens around it
    want = adapter.processor(text=[["a cat", image, "is it ?"]], return_tensors="pt")
    fake = "<fake_token_around_image>"
    for prompt in ("a cat<image>is it ?", f"a cat{fake}<image>{fake}is it ?"):
        batch = adapter.prepare([image], [prompt])
        assert batch["input_ids"].equal(want["input_ids"]), prompt
        assert batch["image_attention_mask"].equal(want["image_attention_mask"])
    # without a placeholder: HF's example format, the image after "User:"
    batch = adapter.prepare([image], ["is it ?"])
    tokens = adapter.processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens[:6] == ["<s>", "User", ":", fake, "<image>", fake]
    with pytest.raises(ValueError, match="2 image placeholders"):
        adapter.prepare([image], ["<image> and <image>"])


@pytest.fixture(scope="module")
def no_resampler(tmp_path_factory):
    return make_tiny_idefics(
        tmp_path_factory.mktemp("idefics_no_resampler"),
        use_resampler=False,
        perceiver_config={"use_resampler": False},
    )


def test_without_resampler_projector_is_what_cross_attention_reads(built, no_resampler):
    """Batch of 4 and one by one, against the image states HF's own pass
    hands its first cross-attention layer (the tower's every token)."""
    images = built.images(NAME)
    prompts = built.prompts(NAME)
    examples = idefics1_reference(no_resampler, images, prompts)
    adapter = load_adapter(no_resampler, device="cpu")
    tower_tokens = len(examples[0].stages["vision"].states[-1])
    assert examples[0].facts["projector_tokens"] == tower_tokens  # CLS included
    requests = [(0, "mean"), (0, "max"), (0, 0), (0, -1)]
    with torch.inference_mode():
        together = adapter.extract(
            adapter.prepare(images, prompts), "projector", requests
        )
        alone = [
            adapter.extract(adapter.prepare([im], [p]), "projector", requests)
            for im, p in zip(images, prompts, strict=True)
        ]
    for request in requests:
        want = expected(examples, "projector", [0], request[1])
        np.testing.assert_allclose(together[request].numpy(), want, atol=1e-5)
        one_by_one = np.concatenate([a[request].numpy() for a in alone])
        np.testing.assert_allclose(one_by_one, want, atol=1e-5)


def test_without_resampler_projector_training_trains_cross_attention(
    built, no_resampler, tmp_path
):
    tuner = VLMClassificationTuner(
        no_resampler,
        train="projector",
        class_names=["cat", "red car"],
        batch_size=2,
        max_iter=2,  # the first step is the warmup's, at lr 0
        output_dir=tmp_path,
        random_state=0,
        device="cpu",
    ).fit(built.images(NAME)[:2], ["cat", "red car"])
    before = load_adapter(no_resampler, device="cpu").model.state_dict()
    after = load_adapter(tuner.model_path_, device="cpu").model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed
    assert all(k.startswith("model.gated_cross_attn_layers.") for k in changed)


@pytest.mark.parametrize("resampler", [True, False])
def test_scorer_reuses_the_cached_prompt(built, no_resampler, resampler):
    """One cached prompt per image, the image's states held for every pass
    over it; the scores equal HF's full passes, one per class."""
    path = str(built.path(NAME)) if resampler else no_resampler
    adapter = load_adapter(path, device="cpu")
    images = built.images(NAME)[:2]
    text = adapter.format_prompt(PROMPT)
    with torch.inference_mode():
        prefix, _ = image_prefix(adapter, images[0], text, [])
    assert prefix.replay is None and prefix.kv is not None
    name = "perceiver_embeddings" if resampler else "image_encoder_embeddings"
    assert list(prefix.held) == [name]
    clf = VLMGenerativeClassifier(
        path, class_names=NAMES, device="cpu", answer_prefix=ANSWER, prompt=PROMPT
    ).fit(images, [0, 1])
    np.testing.assert_allclose(
        clf.decision_function(images), _naive_scores(path, images), atol=1e-4
    )


def test_text_prior_is_refused_with_the_reason(built):
    # HF's forward itself refuses a pass without the image's states
    clf = VLMGenerativeClassifier(
        built.path(NAME), class_names=NAMES, calibration="text_prior", device="cpu"
    )
    with pytest.raises(
        ValueError,
        match=r"^idefics: calibration='text_prior' needs the model to read the "
        r"prompt without the image, but its cross-attention layers read .*"
        r"Use calibration='prior' .* or None\.$",
    ):
        clf.fit(built.images(NAME)[:2], [0, 1])
