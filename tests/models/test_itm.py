"""BLIP's and BLIP-2's image-text retrieval checkpoints, against HF's own outputs.

A retrieval checkpoint shares its model type with the captioner; skvlm picks
its adapter by architecture and serves the vision tower, the image side of the
joint space (projector) and zero-shot classification through the model's
image-text contrastive (ITC) score, at batch sizes 1 and 4.
"""

import numpy as np
import pytest
import torch
from transformers import (
    AutoProcessor,
    Blip2ForImageTextRetrieval,
    BlipForImageTextRetrieval,
)

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import CLIPZeroShotClassifier
from skvlm.models import load_adapter, support_matrix
from skvlm.testing import RETRIEVAL_MODELS, make_tiny_blip, random_images

TYPES = {"blip": BlipForImageTextRetrieval, "blip-2": Blip2ForImageTextRetrieval}
CLASSES = ["cat", "dog", "red car"]
TEMPLATE = "a photo of a {}."


class Reference:
    """HF's own outputs on a tiny retrieval checkpoint."""

    def __init__(self, path, model_type):
        self.path = path
        self.images = random_images(4, seed=3)
        model = TYPES[model_type].from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
        texts = [TEMPLATE.format(name) for name in CLASSES]
        inputs = processor(
            images=self.images, text=texts, return_tensors="pt", padding=True
        )
        inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
        with torch.no_grad():
            if model_type == "blip":
                out = model(**inputs, use_itm_head=False)
                self.logits = out.itm_score.numpy()
                states = model.vision_model(
                    inputs["pixel_values"], output_hidden_states=True
                )
                image = model.vision_proj(out.last_hidden_state[:, 0])
                self.projected = torch.nn.functional.normalize(image, dim=-1).numpy()
            else:
                out = model(**inputs, use_image_text_matching_head=False)
                self.logits = out.logits_per_image.numpy()
                states = model.vision_model(
                    inputs["pixel_values"], output_hidden_states=True
                )
                # the queries' unit vectors side by side, the whole row of unit length
                queries = out.image_embeds.flatten(1)
                self.projected = (queries / queries.norm(dim=-1, keepdim=True)).numpy()
        self.hidden = [h.numpy() for h in states.hidden_states]
        self.pooler = states.pooler_output.numpy()


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    out = {}

    def get(model_type):
        if model_type not in out:
            path = RETRIEVAL_MODELS[model_type].build(
                tmp_path_factory.mktemp(model_type)
            )
            out[model_type] = Reference(path, model_type)
        return out[model_type]

    return get


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """One torch thread (the shared fixture)."""


@pytest.mark.parametrize("model_type", sorted(TYPES))
def test_the_adapter_follows_the_architecture(refs, model_type, tmp_path):
    adapter = load_adapter(refs(model_type).path, device="cpu")
    assert adapter.family == model_type
    assert tuple(adapter.stages) == RETRIEVAL_MODELS[model_type].stages
    if model_type == "blip":  # the captioner, same model type, its own adapter
        captioner = load_adapter(make_tiny_blip(tmp_path), device="cpu")
        assert type(captioner) is not type(adapter)
        assert captioner.stages == ("vision", "language")


@pytest.mark.parametrize("model_type", sorted(TYPES))
def test_vision_states_are_hfs(refs, model_type):
    ref = refs(model_type)
    for layer in (0, 2, -1):
        # cls: the class token; mean: the patches' mean (the class token left out)
        for pooling, reduce in (
            ("cls", lambda h: h[:, 0]),
            ("mean", lambda h: h[:, 1:].mean(1)),
        ):
            expected = reduce(ref.hidden[layer])
            for batch_size in (1, 4):
                got = VLMEmbeddingTransformer(
                    ref.path,
                    stage="vision",
                    layer=layer,
                    pooling=pooling,
                    batch_size=batch_size,
                    device="cpu",
                ).fit_transform(ref.images)
                np.testing.assert_allclose(
                    got, expected, atol=1e-5, err_msg=f"{layer} {pooling}"
                )
    for batch_size in (1, 4):  # the tower's own pooled output, at the last layer
        got = VLMEmbeddingTransformer(
            ref.path, stage="vision", pooling="pooler", batch_size=batch_size
        ).set_params(device="cpu")
        np.testing.assert_allclose(got.fit_transform(ref.images), ref.pooler, atol=1e-5)


@pytest.mark.parametrize("model_type", sorted(TYPES))
def test_projector_is_hfs_itc_image_embedding(refs, model_type):
    ref = refs(model_type)
    for batch_size in (1, 4):
        got = VLMEmbeddingTransformer(
            ref.path,
            stage="projector",
            normalize=True,
            batch_size=batch_size,
            device="cpu",
        ).fit_transform(ref.images)
        np.testing.assert_allclose(got, ref.projected, atol=1e-5)


@pytest.mark.parametrize("model_type", sorted(TYPES))
def test_zero_shot_logits_are_hfs_itc_scores(refs, model_type):
    ref = refs(model_type)
    for batch_size in (1, 4):
        clf = CLIPZeroShotClassifier(
            ref.path,
            class_names=CLASSES,
            templates=[TEMPLATE],
            batch_size=batch_size,
            device="cpu",
        ).fit(ref.images[:3], [0, 1, 2])
        logits = clf.decision_function(ref.images)
        np.testing.assert_allclose(logits, ref.logits, rtol=1e-5, atol=1e-6)
        expected = torch.softmax(torch.tensor(ref.logits), dim=1).numpy()
        proba = clf.predict_proba(ref.images)
        np.testing.assert_allclose(proba, expected, atol=1e-6)
    # each class its own text embedding: the logits tell the classes apart
    assert np.ptp(ref.logits, axis=1).min() > 1e-5


def test_support_matrix_says_zero_shot_is_tested():
    matrix = support_matrix().set_index("model_type")
    assert matrix.loc["blip", "zero_shot"] == "tested"
    assert matrix.loc["blip-2", "zero_shot"] == "tested"
    assert matrix.loc["llava", "zero_shot"] == "n/a"


def test_a_captioning_checkpoint_is_refused_for_zero_shot(tmp_path):
    clf = CLIPZeroShotClassifier(
        make_tiny_blip(tmp_path), class_names=CLASSES, device="cpu"
    )
    with pytest.raises(ValueError, match="BLIP and BLIP-2 retrieval checkpoints"):
        clf.fit(random_images(3), [0, 1, 2])
