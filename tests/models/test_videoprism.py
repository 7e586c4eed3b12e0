"""VideoPrism (skvlm.models._videoprism) against transformers' own forward.

HF's VideoPrism returns only the last spatial and temporal states, so the
reference reads every block with forward hooks on HF's own modules during
HF's own forward, lays each entry out as the docs say (frame by frame, each
frame's patches row by row), and checks the last two against HF's returned
``last_spatial_hidden_state`` / ``last_temporal_hidden_state`` and the
temporal one, after HF's ``layernorm2``, against its ``last_hidden_state``.
``videoprism``: the projector is HF's video embedding, zero-shot HF's own
logits. Its video processor needs torchvision: the cases run in the
torchvision world, in the pytest subprocess that
tests/models/test_backbones.py runs for timm and Depth Pro (one start for
both).
"""

import numpy as np
import pytest
import torch
from transformers import AutoModel
from transformers.utils import is_torchvision_available

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import CLIPZeroShotClassifier
from skvlm.models import load_adapter, load_processor, support_matrix
from skvlm.testing import TINY_MODELS, make_tiny_encoder, random_images

#: model type -> its kind in the support matrix
TYPES = {"videoprism": "clip", "videoprism_vision_model": "vision"}
CLASSES = ["cat", "dog", "red car"]
TEMPLATE = "a photo of a {}."
LAYERS = [0, 1, 2, 3, 4]
TOL = dict(atol=1e-5, rtol=1e-5)
needs_torchvision = pytest.mark.skipif(
    not is_torchvision_available(), reason="runs in the torchvision world"
)


def _np(tensor):
    return tensor.detach().float().numpy()


class Reference:
    """A tiny VideoPrism and what transformers alone computes from it."""

    def __init__(self, path, model_type, images):
        self.path, self.images = path, images
        model = AutoModel.from_pretrained(path).eval()
        processor = load_processor(path)
        tower = model.video_model.vision_model if model_type == "videoprism" else model
        frames = tower.config.num_frames
        videos = [[image] * frames for image in images]
        if model_type == "videoprism":
            texts = [TEMPLATE.format(name) for name in CLASSES]
            inputs = processor(videos=videos, text=texts, return_tensors="pt")
        else:
            inputs = processor(videos=videos, return_tensors="pt")
        pixels = inputs["pixel_values_videos"]
        n = pixels.shape[0]
        seen = {}
        blocks = [*tower.spatial_layers, *tower.temporal_layers]
        hooks = [
            tower.spatial_layers[0].register_forward_pre_hook(
                lambda m, args: seen.setdefault(0, args[0])
            )
        ]
        for k, block in enumerate(blocks, start=1):
            hooks.append(
                block.register_forward_hook(
                    lambda m, args, out, k=k: seen.setdefault(k, out)
                )
            )
        with torch.no_grad():
            if model_type == "videoprism":
                out = model(**inputs)
                self.projected = _np(out.video_embeds)
                # (text, video) softmax over the texts: each video's class probabilities
                self.proba = _np(out.logits_per_text.T)
                self.cosines = _np(out.video_embeds @ out.text_embeds.T)
            out = tower(pixel_values_videos=pixels)
        for hook in hooks:
            hook.remove()
        n_spatial = len(tower.spatial_layers)
        torch.testing.assert_close(seen[n_spatial], out.last_spatial_hidden_state)
        torch.testing.assert_close(seen[len(blocks)], out.last_temporal_hidden_state)
        dim = out.last_hidden_state.shape[-1]
        self.states = []
        for k in range(len(blocks) + 1):
            hidden = seen[k]
            if k > n_spatial:  # (videos * patches, frames, dim)
                hidden = hidden.reshape(n, -1, frames, dim).transpose(1, 2)
            self.states.append(_np(hidden.reshape(n, -1, dim)))
        with torch.no_grad():
            normed = tower.layernorm2(torch.from_numpy(self.states[-1]))
        np.testing.assert_allclose(_np(normed), _np(out.last_hidden_state), **TOL)

    def expected(self, layers, pooling):
        if isinstance(pooling, int):  # a token, counted frame by frame
            return np.concatenate([self.states[k][:, pooling] for k in layers], 1)
        reduce = np.mean if pooling == "mean" else np.max
        return np.concatenate([reduce(self.states[k], axis=1) for k in layers], 1)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    images = random_images(4, seed=7)
    return {
        t: Reference(make_tiny_encoder(tmp_path_factory.mktemp(t), t), t, images)
        for t in TYPES
    }


@needs_torchvision
@pytest.mark.parametrize("model_type", sorted(TYPES))
def test_vision_stage_equals_hf_at_batch_1_and_4(refs, model_type):
    ref = refs[model_type]
    assert len(ref.states) == len(LAYERS)  # 2 spatial + 2 temporal blocks
    # tokens 5 and -3: frame 0's sixth patch, the last frame's fourteenth
    for pooling in ("mean", "max", 5, -3):
        for batch_size in (1, 4):
            vlm = VLMEmbeddingTransformer(
                ref.path,
                stage="vision",
                layer=LAYERS,
                pooling=pooling,
                batch_size=batch_size,
                device="cpu",
                verbose=0,
            )
            np.testing.assert_allclose(
                vlm.fit_transform(ref.images),
                ref.expected(LAYERS, pooling),
                **TOL,
                err_msg=f"pooling={pooling!r} batch_size={batch_size}",
            )
    assert vlm.family_ == "videoprism"
    with pytest.raises(ValueError, match="pooling='pooler' is not available"):
        VLMEmbeddingTransformer(
            ref.path, stage="vision", pooling="pooler", device="cpu", verbose=0
        ).fit_transform(ref.images)


@needs_torchvision
@pytest.mark.parametrize("model_type", sorted(TYPES))
def test_registered_stages_are_the_adapters(refs, model_type):
    adapter = load_adapter(refs[model_type].path, device="cpu")
    assert tuple(adapter.stages) == TINY_MODELS[model_type].stages
    assert TINY_MODELS[model_type].torchvision


@needs_torchvision
def test_projector_is_hfs_video_embedding(refs):
    ref = refs["videoprism"]
    for batch_size in (1, 4):
        vlm = VLMEmbeddingTransformer(
            ref.path,
            stage="projector",
            batch_size=batch_size,
            device="cpu",
            verbose=0,
        )
        np.testing.assert_allclose(vlm.fit_transform(ref.images), ref.projected, **TOL)
        assert vlm.pooling_ == "pooler"


@needs_torchvision
def test_zero_shot_is_hfs_logits(refs):
    ref = refs["videoprism"]
    clf = CLIPZeroShotClassifier(
        ref.path, class_names=CLASSES, templates=[TEMPLATE], device="cpu", verbose=0
    )
    clf.fit(ref.images[:3], [0, 1, 2])
    np.testing.assert_allclose(clf.decision_function(ref.images), ref.cosines, **TOL)
    np.testing.assert_allclose(clf.predict_proba(ref.images), ref.proba, **TOL)


def test_both_types_are_tested_in_the_matrix():
    matrix = support_matrix().set_index("model_type")
    for model_type, kind in TYPES.items():
        row = matrix.loc[model_type]
        assert row["kind"] == kind
        assert row["vision"] == "tested"
        if kind == "clip":
            assert row["projector"] == row["zero_shot"] == "tested"


@pytest.mark.skipif(is_torchvision_available(), reason="without torchvision only")
def test_without_torchvision_loading_names_family_and_fix(tmp_path):
    # the saved files of a VideoPrism tower (its video processor's config
    # written as transformers writes it; building one needs torchvision)
    import json

    from transformers import VideoPrismVisionConfig, VideoPrismVisionModel

    from skvlm.testing._encoders_videoprism import _VISION

    VideoPrismVisionModel(VideoPrismVisionConfig(**_VISION)).save_pretrained(tmp_path)
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({"video_processor_type": "LlavaOnevisionVideoProcessor"})
    )
    vlm = VLMEmbeddingTransformer(str(tmp_path), device="cpu", verbose=0)
    with pytest.raises(
        ImportError, match="videoprism: its video processor.*torchvision"
    ):
        vlm.fit_transform(random_images(1))
