"""Vision encoders and CLIP-style models against transformers' own outputs.

DINOv3 (ViT, ConvNeXt), ConvNeXt(-V2), Swin(-V2), Hiera, MLCD, SigLIP2's NaFlex
tower (its padding masked), AIMv2, MetaCLIP 2, ALIGN, AltCLIP and Chinese-CLIP:
every stage and pooling equals HF's
``output_hidden_states`` / ``pooler_output`` / ``get_image_features``, pooled by
hand here, at batch sizes 1 and 4; the CLIP-style ones classify zero-shot with
exactly HF's ``logits_per_image``. Each tiny checkpoint and its HF reference is
built once per test session.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModel

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import CLIPZeroShotClassifier
from skvlm.models import describe_sites, load_adapter, load_processor
from skvlm.testing import TESTED_ENCODER_TYPES, make_tiny_encoder

from ._encoder_references import References

#: model type -> (number of prefix tokens (CLS, registers) or None for
#: hierarchical encoders, has a CLS token, has a projector stage)
KINDS = {
    "dinov3_vit": (3, True, False),
    "mlcd": (1, True, False),
    "mlcd_vision_model": (1, True, False),
    "aimv2_vision_model": (0, False, False),
    "aimv2": (0, False, True),
    "metaclip_2": (1, True, True),
    "altclip": (1, True, True),
    "chinese_clip": (1, True, True),
    "convnext": (None, False, False),
    "convnextv2": (None, False, False),
    "dinov3_convnext": (None, False, False),
    "swin": (None, False, False),
    "swinv2": (None, False, False),
    "hiera": (None, False, False),
    "align": (None, False, True),
    # the vision-only towers of _families_claimed (DeiT adds a distillation token)
    "beit": (1, True, False),
    "chinese_clip_vision_model": (1, True, False),
    "clip_vision_model": (1, True, False),
    "data2vec-vision": (1, True, False),
    "deit": (2, True, False),
    "dinov2_with_registers": (3, True, False),
    "siglip_vision_model": (0, False, False),
    # NaFlex: patch sequences padded to a budget, with a mask and grid shapes
    "siglip2_vision_model": (0, False, False),
}
#: the adapter family serving each type, where it is not the type itself
FAMILIES = {
    "aimv2_vision_model": "aimv2",
    "beit": "vision-encoder",
    "chinese_clip_vision_model": "chinese_clip",
    "clip_vision_model": "clip",
    "data2vec-vision": "vision-encoder",
    "deit": "vision-encoder",
    "dinov2_with_registers": "vision-encoder",
    "siglip_vision_model": "siglip",
    "siglip2_vision_model": "siglip2",
    "mlcd_vision_model": "mlcd",
    "convnextv2": "convnext",
    "swinv2": "swin",
}
CLIP_STYLE = [t for t, (_, _, projector) in KINDS.items() if projector]
LAYERS = [-1, 0, 1]  # out of order: the concatenation follows the list
CLASSES = ["cat", "dog", "red car"]


def _np(tensor):
    return tensor.detach().float().numpy()


class Reference:
    """A tiny checkpoint and what transformers alone computes from it."""

    def __init__(self, path, model_type, images):
        self.path = path
        self.images = images
        model = AutoModel.from_pretrained(path).eval()
        processor = load_processor(path)
        image_processor = getattr(processor, "image_processor", processor)
        inputs = image_processor(images=images, return_tensors="pt")
        pixels = inputs["pixel_values"]
        # NaFlex (SigLIP2): each image's patches padded to a budget, masked
        naflex = {
            k: inputs[k]
            for k in ("pixel_attention_mask", "spatial_shapes")
            if k in inputs
        }
        tower = getattr(model, "vision_model", model)
        with torch.no_grad():
            out = tower(pixel_values=pixels, output_hidden_states=True, **naflex)
            self.projected = (
                _np(model.get_image_features(pixel_values=pixels).pooler_output)
                if KINDS[model_type][2]
                else None
            )
            if model_type in CLIP_STYLE:
                # ALIGN's processor pads to its own max_length by default
                padding = {} if model_type == "align" else {"padding": True}
                inputs = processor(
                    text=[f"a photo of a {name}." for name in CLASSES],
                    images=images,
                    return_tensors="pt",
                    **padding,
                )
                self.logits = _np(model(**inputs).logits_per_image)
        # (batch, C, H, W) maps become (batch, H*W, C): one token per position
        self.states = [
            _np(h.flatten(2).transpose(1, 2) if h.dim() == 4 else h)
            for h in out.hidden_states
        ]
        self.pooler = None if out.pooler_output is None else _np(out.pooler_output)
        self.n_prefix, self.has_cls, _ = KINDS[model_type]
        mask = naflex.get("pixel_attention_mask")
        self.valid = None if mask is None else mask.bool().numpy()

    def pool(self, layer, pooling):
        """(n_images, width) of entry ``layer``, pooled as documented."""
        if pooling == "pooler":
            return self.pooler
        hidden = self.states[layer]
        if self.valid is not None:  # each image's own patches, padding left out
            rows = [h[v] for h, v in zip(hidden, self.valid, strict=True)]
            if isinstance(pooling, int):
                return np.stack([r[pooling] for r in rows])
            reduce = np.mean if pooling == "mean" else np.max
            return np.stack([reduce(r, axis=0) for r in rows])
        if pooling == "cls":
            return hidden[:, 0]
        if isinstance(pooling, int):
            return hidden[:, pooling]
        patches = hidden[:, self.n_prefix or 0 :]
        return patches.mean(1) if pooling == "mean" else patches.max(1)

    def expected(self, layers, pooling):
        return np.concatenate([self.pool(k, pooling) for k in layers], axis=1)


@pytest.fixture(scope="session")
def encoders(tmp_path_factory):
    return References(tmp_path_factory, make_tiny_encoder, Reference)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vision_poolings(model_type):
    n_prefix, has_cls, _ = KINDS[model_type]
    names = (("cls",) if has_cls else ()) + ("mean", "max")
    if n_prefix is not None:
        names += (0, -1)  # ViT-like towers: token positions (CLS or first patch)
    return names


def _vlm(ref, stage, **params):
    return VLMEmbeddingTransformer(ref.path, stage=stage, device="cpu", **params)


def test_every_type_is_covered():
    assert sorted(KINDS) == sorted(TESTED_ENCODER_TYPES)


@pytest.mark.parametrize("model_type", sorted(KINDS))
def test_vision_sites_equal_hf(encoders, model_type):
    ref = encoders[model_type]
    images = ref.images
    for pooling in _vision_poolings(model_type):
        for batch_size in (1, 4):
            vlm = _vlm(ref, "vision", layer=LAYERS, pooling=pooling)
            got = vlm.set_params(batch_size=batch_size).fit_transform(images)
            assert vlm.family_ == FAMILIES.get(model_type, model_type)
            assert got.dtype == np.float32
            np.testing.assert_allclose(
                got,
                ref.expected(LAYERS, pooling),
                atol=1e-5,
                err_msg=f"pooling={pooling!r} batch_size={batch_size}",
            )
    if ref.pooler is None:  # no pooling layer (Data2Vec-Vision's default)
        with pytest.raises(ValueError, match="pooling='pooler' is not available"):
            _vlm(ref, "vision", pooling="pooler").fit_transform(images)
        return
    for batch_size in (1, 4):
        got = _vlm(ref, "vision", pooling="pooler", batch_size=batch_size)
        np.testing.assert_allclose(
            got.fit_transform(images), ref.pooler, atol=1e-5, err_msg="pooler"
        )


@pytest.mark.parametrize("model_type", CLIP_STYLE)
def test_projector_is_hfs_image_features(encoders, model_type):
    ref = encoders[model_type]
    for batch_size in (1, 4):
        vlm = _vlm(ref, "projector", batch_size=batch_size)  # pooling="auto"
        got = vlm.fit_transform(ref.images)
        assert vlm.pooling_ == "pooler"
        np.testing.assert_allclose(got, ref.projected, atol=1e-5)


@pytest.mark.parametrize("model_type", CLIP_STYLE)
def test_zero_shot_logits_are_hfs(encoders, model_type):
    ref = encoders[model_type]
    clf = CLIPZeroShotClassifier(
        ref.path, class_names=CLASSES, templates=["a photo of a {}."], device="cpu"
    )
    clf.fit(ref.images[:3], [0, 1, 2])
    logits = clf.decision_function(ref.images)
    np.testing.assert_allclose(logits, ref.logits, rtol=1e-4, atol=1e-4)
    expected = torch.softmax(torch.tensor(ref.logits), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(ref.images), expected, atol=1e-5)
    # the classes' logits differ (equal logits would make this test unable to fail)
    assert np.ptp(logits, axis=1).min() > 1e-4


@pytest.mark.parametrize(
    "model_type", [t for t, (n_prefix, *_) in KINDS.items() if n_prefix is None]
)
def test_hierarchical_widths_follow_each_entry(encoders, model_type):
    # Every stage has its own width: the columns of a layer list are each
    # layer's own, in the order asked, and the names say which is which.
    ref = encoders[model_type]
    widths = [ref.states[k].shape[-1] for k in LAYERS]
    vlm = _vlm(ref, "vision", layer=LAYERS, pooling="mean").fit()
    assert vlm.pooling_ == "mean"  # auto is mean without a CLS token
    assert vlm.layer_widths_ == widths
    names = vlm.get_feature_names_out()
    n = len(ref.states)
    assert len(names) == vlm.n_features_out_ == sum(widths)
    assert names[0] == f"vision_l{n - 1}_mean_0"
    assert names[widths[0]] == "vision_l0_mean_0"
    sites = describe_sites(ref.path)
    vision = sites[(sites.stage == "vision") & (sites.pooling == "mean")]
    assert list(vision.dim) == [h.shape[-1] for h in ref.states]
    with pytest.raises(ValueError, match="'mean', 'max'"):
        _vlm(ref, "vision", pooling=0).fit()


def test_a_shallow_stage_runs_only_the_stages_before_it(encoders):
    ref = encoders["convnext"]
    stages = load_adapter(ref.path, device="cpu").model.encoder.stages
    ran = []
    handles = [
        stage.register_forward_hook(lambda *args, i=i: ran.append(i))
        for i, stage in enumerate(stages)
    ]
    try:
        _vlm(ref, "vision", layer=1, pooling="mean").fit_transform(ref.images[:2])
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0]


def test_each_hierarchical_entry_gets_masks_of_its_own_tokens(encoders):
    # the stack asks for every entry's masks itself (Stack.entry_masks): a
    # plain Adapter.capture gives each stage masks over its own token count
    from skvlm.models import Adapter

    ref = encoders["swin"]
    adapter = load_adapter(ref.path, device="cpu")
    batch = adapter.prepare(ref.images[:2])
    seen = {}

    def read(layer, hidden, masks):
        seen[layer] = (hidden.shape[1], masks.valid.shape[1], int(masks.pooled.sum()))

    layers = range(adapter.n_layers("vision"))
    with torch.no_grad():
        Adapter.capture(adapter, batch, "vision", layers, read)
    counts = [h.shape[1] for h in ref.states]
    assert len(set(counts)) > 1  # the stages differ in token count
    assert [seen[k] for k in layers] == [(n, n, 2 * n) for n in counts]


def test_store_serves_hierarchical_layer_lists(encoders, tmp_path):
    ref = encoders["swin"]
    vlm = _vlm(ref, "vision", layer=LAYERS, pooling="max", cache=tmp_path / "s")
    first = vlm.fit_transform(ref.images)
    again = vlm.set_params(layer=[1, -1]).fit_transform(ref.images)
    np.testing.assert_allclose(first, ref.expected(LAYERS, "max"), atol=1e-5)
    np.testing.assert_allclose(again, ref.expected([1, -1], "max"), atol=1e-5)


def test_unknown_type_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="no tiny builder.*convnext"):
        make_tiny_encoder(tmp_path, "resnet")


def test_aimv2_without_head_offers_no_pooler():
    # The vision-only AIMv2 checkpoints have no attention-pooling head.
    from transformers import Aimv2VisionConfig, Aimv2VisionModel

    from skvlm.models import adapter_class

    config = Aimv2VisionConfig(
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        use_head=False,
    )
    adapter = adapter_class(config)(Aimv2VisionModel(config), None)
    assert adapter.stages == ("vision",)
    assert adapter.poolings("vision", 2) == ("mean", "max")
    assert adapter.default_pooling("vision") == "mean"
