"""ViT-like backbones and still-video encoders against transformers' own outputs.

I-JEPA, ViT-MAE (its masking off), ViT-MSN, ViTDet, Pixio, TIPSv2's vision
tower, YOLOS, ImageGPT, VideoMAE, TimeSformer, ViViT, CLIPSeg and TIPSv2: every vision entry and
pooling equals HF's ``output_hidden_states`` / ``pooler_output``, pooled by
hand here over the tokens the docs name, at batch sizes 1 and 4. Each tiny
checkpoint and its reference is built once per test session.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModel

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import CLIPZeroShotClassifier
from skvlm.models import load_adapter, load_processor
from skvlm.testing import make_tiny_encoder
from skvlm.testing._registry import TINY_MODELS

from ._encoder_references import References

#: model type -> (leading special tokens, trailing special tokens, has a CLS
#: token, has a pooled output, family); leading None: (C, H, W) maps
KINDS = {
    "ijepa": (0, 0, False, False, "vit-like"),
    "vit_msn": (1, 0, True, False, "vit-like"),
    "vit_mae": (1, 0, True, False, "vit_mae"),
    "pixio": (4, 0, True, True, "vit-pooled"),  # four class tokens
    "tipsv2_vision_model": (2, 0, True, True, "vit-pooled"),  # CLS, a register
    "yolos": (1, 3, True, True, "yolos"),  # three detection tokens last
    "vitdet": (None, 0, False, False, "vitdet"),
    "imagegpt": (0, 0, False, False, "imagegpt"),
    "videomae": (0, 0, False, False, "still-video"),
    "timesformer": (1, 0, True, False, "still-video"),
    "vivit": (1, 0, True, True, "still-video"),
    # CLIP-style: the vision tower's states; projector and zero-shot too
    "clipseg": (1, 0, True, True, "clipseg"),
    "tipsv2": (2, 0, True, True, "tipsv2"),  # CLS, a register
}
CLIP_STYLE = ["clipseg", "tipsv2"]
CLASSES = ["cat", "dog", "red car"]
LAYERS = [-1, 0, 1]


def _np(tensor):
    return tensor.detach().float().numpy()


def _one_by_one(model, images, processor):
    """HF's states and pooled output of each image run alone, unpadded: per
    layer a list of (tokens, dim) arrays, one per image (their sizes, so their
    token counts, differ), and the (n_images, dim) pooled outputs."""
    outs = []
    for image in images:
        inputs = processor(images=[image], return_tensors="pt")
        outs.append(
            model(pixel_values=inputs["pixel_values"], output_hidden_states=True)
        )
    states = [
        [_np(o.hidden_states[k][0]) for o in outs]
        for k in range(len(outs[0].hidden_states))
    ]
    return states, np.concatenate([_np(o.pooler_output) for o in outs])


class Reference:
    """A tiny checkpoint and what transformers alone computes from it."""

    def __init__(self, path, model_type, images):
        self.path = path
        self.images = images
        kwargs = {}
        if model_type == "vit_mae":  # every patch kept (the checkpoint says 0.75)
            kwargs["mask_ratio"] = 0.0
        model = AutoModel.from_pretrained(path, **kwargs).eval()
        processor = load_processor(path)
        if model_type in ("videomae", "timesformer", "vivit"):
            frames = model.config.num_frames
            inputs = processor([[im] * frames for im in images], return_tensors="pt")
        else:
            inputs = processor(images=images, return_tensors="pt")
        inputs = {k: v for k, v in inputs.items() if k != "pixel_mask"}
        if model_type == "vit_mae":  # increasing noise: the patches in order
            n = inputs["pixel_values"].shape[-1] // model.config.patch_size
            inputs["noise"] = torch.arange(n * n, dtype=torch.float32).expand(
                len(images), -1
            )
        tower = getattr(model, "vision_model", model)
        with torch.no_grad():
            out = tower(**inputs, output_hidden_states=True)
            if model_type in CLIP_STYLE:
                self.projected = _np(model.get_image_features(**inputs).pooler_output)
                # TIPSv2's processor pads its texts to the full length itself
                padding = {} if model_type == "tipsv2" else {"padding": True}
                both = processor(
                    text=[f"a photo of a {name}." for name in CLASSES],
                    images=images,
                    return_tensors="pt",
                    **padding,
                )
                self.logits = _np(model(**both).logits_per_image)
        # per layer, one (tokens, dim) array per image
        self.states = [
            list(_np(h.flatten(2).transpose(1, 2) if h.dim() == 4 else h))
            for h in out.hidden_states
        ]
        pooler = getattr(out, "pooler_output", None)
        self.pooler = None if pooler is None else _np(pooler)
        if model_type == "yolos":  # images of different sizes: each alone
            with torch.no_grad():
                self.states, self.pooler = _one_by_one(model, images, processor)
        self.n_prefix, self.n_suffix, self.has_cls, self.has_pooler, self.family = (
            KINDS[model_type]
        )

    def pool(self, layer, pooling):
        return np.stack([self._pool(h, pooling) for h in self.states[layer]])

    def _pool(self, hidden, pooling):
        if pooling == "cls":
            return hidden[0]
        if isinstance(pooling, int):  # every token counts, special ones too
            return hidden[pooling]
        patches = hidden[self.n_prefix or 0 : hidden.shape[0] - self.n_suffix]
        return patches.mean(0) if pooling == "mean" else patches.max(0)

    def expected(self, layers, pooling):
        return np.concatenate([self.pool(k, pooling) for k in layers], axis=1)


@pytest.fixture(scope="session")
def backbones(tmp_path_factory):
    return References(tmp_path_factory, make_tiny_encoder, Reference)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _poolings(model_type):
    n_prefix, _, has_cls, _, _ = KINDS[model_type]
    names = (("cls",) if has_cls else ()) + ("mean", "max")
    if n_prefix is not None:
        names += (0, -1)
    return names


def _vlm(ref, **params):
    return VLMEmbeddingTransformer(ref.path, stage="vision", device="cpu", **params)


def test_every_type_is_registered():
    for model_type in DETECTORS:
        assert TINY_MODELS[model_type].stages == ("vision",)
    for model_type in KINDS:
        stages = ("vision", "projector") if model_type in CLIP_STYLE else ("vision",)
        assert TINY_MODELS[model_type].stages == stages


@pytest.mark.parametrize("model_type", sorted(KINDS))
def test_vision_sites_equal_hf(backbones, model_type):
    ref = backbones[model_type]
    for pooling in _poolings(model_type):
        for batch_size in (1, 4):
            vlm = _vlm(ref, layer=LAYERS, pooling=pooling, batch_size=batch_size)
            got = vlm.fit_transform(ref.images)
            assert vlm.family_ == ref.family
            np.testing.assert_allclose(
                got,
                ref.expected(LAYERS, pooling),
                atol=1e-5,
                err_msg=f"pooling={pooling!r} batch_size={batch_size}",
            )
    if not ref.has_pooler:
        with pytest.raises(ValueError, match="pooling='pooler' is not available"):
            _vlm(ref, pooling="pooler").fit_transform(ref.images)
        return
    for batch_size in (1, 4):
        got = _vlm(ref, pooling="pooler", batch_size=batch_size)
        np.testing.assert_allclose(got.fit_transform(ref.images), ref.pooler, atol=1e-5)


def test_yolos_runs_a_padded_batch_image_by_image(backbones):
    # the test images differ in processed size: their batch is padded, and
    # HF's pass over that padded batch differs from each image alone (YOLOS
    # attends to the padding); skvlm's batch of 4 equals each image alone
    ref = backbones["yolos"]
    inputs = load_processor(ref.path)(images=ref.images, return_tensors="pt")
    assert not inputs["pixel_mask"].all()
    model = AutoModel.from_pretrained(ref.path).eval()
    with torch.no_grad():
        padded = model(pixel_values=inputs["pixel_values"], output_hidden_states=True)
    n_detection = model.config.num_detection_tokens
    padded_mean = np.concatenate(
        [_np(padded.hidden_states[k][:, 1:-n_detection].mean(1)) for k in LAYERS],
        axis=1,
    )
    alone = ref.expected(LAYERS, "mean")
    assert not np.allclose(padded_mean, alone, atol=1e-3)
    got = _vlm(ref, layer=LAYERS, pooling="mean", batch_size=4).fit_transform(
        ref.images
    )
    np.testing.assert_allclose(got, alone, atol=1e-5)


def test_vit_mae_reads_every_patch_in_place(backbones):
    # 16 patches and the CLS, not the quarter MAE's pre-training keeps
    ref = backbones["vit_mae"]
    assert ref.states[0][0].shape[0] == 17
    got = _vlm(ref, layer=1, pooling=-1).fit_transform(ref.images)
    np.testing.assert_allclose(got, ref.pool(1, -1), atol=1e-5)


def test_vit_mae_leaves_the_loaded_model_as_saved(backbones):
    # the masking is off in skvlm's passes only: the shared model keeps its
    # checkpoint's ratio, and a plain HF pass through it still masks
    ref = backbones["vit_mae"]
    adapter = load_adapter(ref.path, device="cpu")
    _vlm(ref, layer=1, pooling="mean").fit_transform(ref.images)
    assert adapter.model.config.mask_ratio == 0.75
    inputs = load_processor(ref.path)(images=ref.images[:2], return_tensors="pt")
    with torch.no_grad():
        out = adapter.model(pixel_values=inputs["pixel_values"])
    assert out.last_hidden_state.shape[1] == 1 + 4  # CLS + a quarter of 16


@pytest.mark.parametrize("model_type", CLIP_STYLE)
def test_projector_is_hfs_image_features(backbones, model_type):
    ref = backbones[model_type]
    for batch_size in (1, 4):
        vlm = VLMEmbeddingTransformer(
            ref.path, stage="projector", device="cpu", batch_size=batch_size
        )
        np.testing.assert_allclose(
            vlm.fit_transform(ref.images), ref.projected, atol=1e-5
        )
        assert vlm.pooling_ == "pooler"


@pytest.mark.parametrize("model_type", CLIP_STYLE)
def test_zero_shot_logits_are_hfs(backbones, model_type):
    ref = backbones[model_type]
    clf = CLIPZeroShotClassifier(
        ref.path, class_names=CLASSES, templates=["a photo of a {}."], device="cpu"
    )
    clf.fit(ref.images[:3], [0, 1, 2])
    np.testing.assert_allclose(
        clf.decision_function(ref.images), ref.logits, rtol=1e-4, atol=1e-4
    )
    expected = torch.softmax(torch.tensor(ref.logits), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(ref.images), expected, atol=1e-5)
    # the classes' logits differ (equal logits would make this test unable to fail)
    assert np.ptp(ref.logits, axis=1).min() > 1e-4


# -- DETR-style detectors: the transformer encoder over the backbone's map ------------
DETECTORS = [
    "conditional_detr",
    "dab-detr",
    "deformable_detr",
    "detr",
    "table-transformer",
]


def _first_side(tokens):
    """The first level's side of square maps halving down to 1 that hold
    ``tokens`` in all (64 + 16 + 4 + 1 = 85 -> 8)."""
    side = 1
    while sum((side >> i) ** 2 for i in range(side.bit_length())) < tokens:
        side *= 2
    return side


class DetectorReference:
    """Each image alone through HF's model, padded to the ``longest_edge`` square
    as the docs say; the tokens that hold the image from DETR's own rule (the
    pixel mask, nearest-resized to the map)."""

    def __init__(self, path, images):
        self.path = path
        self.images = images
        model = AutoModel.from_pretrained(path).eval()
        processor = load_processor(path)
        longest = processor.size["longest_edge"]
        self.states, self.valid = [], []
        for image in images:
            inputs = processor(
                images=[image],
                return_tensors="pt",
                pad_size={"height": longest, "width": longest},
            )
            with torch.no_grad():
                out = model(**inputs, output_hidden_states=True)
            states = [_np(h[0]) for h in out.encoder_hidden_states]
            # square maps, of one side or (Deformable DETR) halving level by
            # level down to 1
            sides, left = [], states[0].shape[0]
            while left:
                side = int(round(left**0.5)) if not sides else sides[-1] // 2
                if not sides and model.config.model_type == "deformable_detr":
                    side = _first_side(left)
                sides.append(side)
                left -= side * side
            masks = [
                torch.nn.functional.interpolate(
                    inputs["pixel_mask"][None].float(), size=(side, side)
                )
                .bool()
                .flatten()
                for side in sides
            ]
            self.states.append(states)
            self.valid.append(torch.cat(masks).numpy())

    def expected(self, layers, pooling):
        reduce = np.mean if pooling == "mean" else np.max
        return np.stack(
            [
                np.concatenate([reduce(s[k][v], axis=0) for k in layers])
                for s, v in zip(self.states, self.valid, strict=True)
            ]
        )


@pytest.fixture(scope="session")
def detectors(tmp_path_factory, backbones):
    refs = {}

    def get(model_type):
        if model_type not in refs:
            path = make_tiny_encoder(tmp_path_factory.mktemp(model_type), model_type)
            refs[model_type] = DetectorReference(path, backbones.images)
        return refs[model_type]

    return get


@pytest.mark.parametrize("model_type", DETECTORS)
def test_detector_encoder_equals_hf(detectors, model_type):
    ref = detectors(model_type)
    # the images differ in aspect: each one is padded, by its own amount
    assert not any(v.all() for v in ref.valid)
    assert len({int(v.sum()) for v in ref.valid}) >= 3
    for pooling in ("mean", "max"):
        for batch_size in (1, 4):
            vlm = _vlm(ref, layer=LAYERS, pooling=pooling, batch_size=batch_size)
            got = vlm.fit_transform(ref.images)
            assert vlm.family_ == "detr"
            np.testing.assert_allclose(
                got,
                ref.expected(LAYERS, pooling),
                atol=1e-5,
                err_msg=f"pooling={pooling!r} batch_size={batch_size}",
            )
    with pytest.raises(ValueError, match="pooling='pooler' is not available"):
        _vlm(ref, pooling="pooler").fit_transform(ref.images)


def test_detector_mask_hook_is_this_threads_only(detectors):
    # a plain pass through the shared model in another thread, run while this
    # thread's pass holds its hook, leaves both threads' masks alone
    import threading

    adapter = load_adapter(detectors("detr").path, device="cpu")
    batch = adapter.prepare(detectors("detr").images[:2])
    seen = {}

    def other_thread():
        try:
            adapter.stack("vision", batch)  # this thread's (empty) list
            with torch.no_grad():
                adapter.model(
                    pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"]
                )
            seen["masks"] = len(adapter._local.masks)
        except Exception as exc:  # noqa: BLE001 - reported below
            seen["error"] = exc

    def run_other(module, args, kwargs):
        if threading.current_thread() is threading.main_thread() and not seen:
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()

    handle = adapter.encoder.register_forward_pre_hook(run_other, with_kwargs=True)
    try:
        adapter.stack("vision", batch)
        with torch.no_grad():
            adapter.forward("vision", batch)
    finally:
        handle.remove()
    assert seen == {"masks": 0}
    assert len(adapter._local.masks) == 1


def test_a_timm_backbone_without_timm_names_family_and_fix(detectors, tmp_path):
    # DETR's hub checkpoints build their ResNet with timm (which needs
    # torchvision); the tiny ones use transformers' own ResNet
    import json
    import shutil

    from transformers.utils import is_timm_available

    if is_timm_available():
        pytest.skip("this world has timm")
    path = shutil.copytree(detectors("detr").path, tmp_path / "detr")
    config = json.loads((path / "config.json").read_text())
    config["backbone_config"] = {"model_type": "timm_backbone", "backbone": "resnet50"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ImportError, match=r"^detr: .*'resnet50'.*pip install"):
        VLMEmbeddingTransformer(path, stage="vision", device="cpu").fit()
