"""Convolutional and hierarchical backbones against transformers' own outputs.

ResNet, RegNet, BiT, EfficientNet, MobileNet V1/V2, MobileViT (V1, V2), LeViT,
PVT, PoolFormer, FocalNet, SwiftFormer, SegFormer, GLPN, Depth Pro's image
tower (served by ``BackboneAdapter``) and DPT's ViT encoder: every entry of the vision stage is
HF's ``hidden_states[k]`` (plus, where the model ends in a wider 1x1
convolution, its ``last_hidden_state``), pooled by hand here (a map's tokens are
its positions), and ``pooler`` HF's ``pooler_output``, at batch sizes 1 and 4.
timm's models (``timm_wrapper``) and Depth Pro (its image processor) run the
same case in the torchvision world. The types skvlm refuses say why, in the
matrix and at load.
Each tiny checkpoint and its HF reference is built once per test session.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_MAPPING_NAMES,
    MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)
from transformers.utils import is_torchvision_available

from skvlm import VLMEmbeddingTransformer
from skvlm.models import adapter_class, load_processor, support_matrix
from skvlm.testing import (
    BACKBONE_BUILDERS,
    TINY_MODELS,
    make_tiny_backbone,
    random_images,
)

from ._encoder_references import References

ROOT = Path(__file__).resolve().parents[2]
WORLD = Path(sys.prefix) / "torchvision-world"
#: types whose model ends in a 1x1 convolution wider than its last hidden
#: state: its ``last_hidden_state`` is one more entry (the one pooled)
WIDER_LAST = {"efficientnet", "mobilenet_v2", "mobilevit"}
#: types whose HF model has a pooled output (pooler offered at the last entry)
POOLED = {
    "bit",
    "efficientnet",
    "focalnet",
    "levit",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilevit",
    "mobilevitv2",
    "regnet",
    "resnet",
    "timm_wrapper",
}
#: types whose image processor (depth_pro) or model (timm) needs torchvision
TORCHVISION = ("depth_pro", "timm_wrapper")
TYPES = [t for t in BACKBONE_BUILDERS if t != "dpt"]
LAYERS = [-1, 0, 1]
#: types whose image processor keeps each image's size: batched on images of
#: one size, and image by image on images of different sizes
ONE_SIZE = {"glpn", "swin2sr"}
#: float32 tolerance: a batch of 1 and one of 4 take different convolution
#: kernels, whose sums round differently (values up to about 5 here)
TOL = dict(atol=1e-5, rtol=5e-5)
needs_torchvision = pytest.mark.skipif(
    not is_torchvision_available(), reason="runs in the torchvision world"
)


def _np(tensor):
    return tensor.detach().float().numpy()


def _tokens(hidden):
    return hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden


class Reference:
    """A tiny backbone and what transformers alone computes from it."""

    def __init__(self, path, model_type, images):
        self.path = path
        self.images = images
        model = AutoModel.from_pretrained(path).eval()
        processor = load_processor(path)
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = model(pixel_values=pixels, output_hidden_states=True)
        states = list(out.hidden_states)
        if model_type in WIDER_LAST:
            states.append(out.last_hidden_state)
        self.states = [_np(_tokens(h)) for h in states]
        pooled = getattr(out, "pooler_output", None)
        self.pooler = None if pooled is None else _np(pooled.flatten(1))

    def expected(self, layers, pooling):
        reduce = np.mean if pooling == "mean" else np.max
        return np.concatenate([reduce(self.states[k], axis=1) for k in layers], axis=1)


@pytest.fixture(scope="session")
def backbones(tmp_path_factory):
    mixed = random_images(4, seed=7)
    one_size = random_images(4, seed=7, sizes=((64, 64),))
    return References(
        tmp_path_factory,
        make_tiny_backbone,
        Reference,
        images=lambda model_type: one_size if model_type in ONE_SIZE else mixed,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vlm(ref, **params):
    return VLMEmbeddingTransformer(ref.path, stage="vision", device="cpu", **params)


@pytest.mark.parametrize(
    "model_type",
    [
        pytest.param(t, marks=(needs_torchvision,) if t in TORCHVISION else ())
        for t in TYPES
    ],
)
def test_backbone_vision_stage_equals_hf(backbones, model_type):
    ref = backbones[model_type]
    for pooling in ("mean", "max"):
        for batch_size in (1, 4):
            vlm = _vlm(ref, layer=LAYERS, pooling=pooling, batch_size=batch_size)
            got = vlm.fit_transform(ref.images)
            assert vlm.family_ == model_type
            np.testing.assert_allclose(
                got,
                ref.expected(LAYERS, pooling),
                **TOL,
                err_msg=f"pooling={pooling!r} batch_size={batch_size}",
            )
    assert vlm.layer_widths_ == [ref.states[k].shape[-1] for k in LAYERS]
    if model_type not in POOLED:
        assert ref.pooler is None or ref.pooler.shape[1] != ref.states[-1].shape[-1]
        with pytest.raises(ValueError, match="pooling='pooler' is not available"):
            _vlm(ref, pooling="pooler").fit_transform(ref.images)
        return
    for batch_size in (1, 4):
        got = _vlm(ref, pooling="pooler", batch_size=batch_size)
        np.testing.assert_allclose(
            got.fit_transform(ref.images), ref.pooler, **TOL, err_msg="pooler"
        )


@pytest.mark.parametrize("model_type", sorted(ONE_SIZE))
def test_images_of_different_sizes_equal_hf_image_by_image(backbones, model_type):
    # their processors keep each image's size: HF runs each image alone
    ref = backbones[model_type]
    images = random_images(4, seed=3, sizes=((64, 96), (96, 64), (64, 64)))
    model = AutoModel.from_pretrained(ref.path).eval()
    processor = load_processor(ref.path)
    expected = {"mean": [], "max": []}
    for image in images:
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            states = model(pixel_values=pixels, output_hidden_states=True).hidden_states
        for pooling, reduce in (("mean", np.mean), ("max", np.max)):
            expected[pooling].append(
                np.concatenate(
                    [reduce(_np(_tokens(states[k])), axis=1) for k in LAYERS], 1
                )
            )
    for pooling, rows in expected.items():
        vlm = _vlm(ref, layer=LAYERS, pooling=pooling, batch_size=4)
        np.testing.assert_allclose(vlm.fit_transform(images), np.vstack(rows), **TOL)


def test_dpt_is_its_vit_encoder(backbones):
    # DPT: CLS, then patches, as the ViT-like towers
    ref = backbones["dpt"]
    cases = {
        "cls": lambda h: h[:, 0],
        "mean": lambda h: h[:, 1:].mean(1),
        "max": lambda h: h[:, 1:].max(1),
        0: lambda h: h[:, 0],
        -1: lambda h: h[:, -1],
    }
    for pooling, by_hand in cases.items():
        for batch_size in (1, 4):
            vlm = _vlm(ref, layer=LAYERS, pooling=pooling, batch_size=batch_size)
            expected = np.concatenate([by_hand(ref.states[k]) for k in LAYERS], 1)
            np.testing.assert_allclose(vlm.fit_transform(ref.images), expected, **TOL)
            assert vlm.family_ == "dpt"
    got = _vlm(ref, pooling="pooler").fit_transform(ref.images)
    np.testing.assert_allclose(got, ref.pooler, **TOL)


def test_every_backbone_is_registered_as_tested():
    matrix = support_matrix().set_index("model_type")
    for model_type in BACKBONE_BUILDERS:
        assert TINY_MODELS[model_type].stages == ("vision",)
        assert matrix.loc[model_type, "kind"] == "vision"
        assert matrix.loc[model_type, "vision"] == "tested"


def test_every_image_type_is_a_row_with_a_status():
    from skvlm.models._traits import VISION_NOT_SERVED

    matrix = support_matrix().set_index("model_type")
    image_types = set(MODEL_FOR_IMAGE_MAPPING_NAMES) | set(
        MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES
    )
    assert image_types <= set(matrix.index)
    for model_type in image_types:
        row = matrix.loc[model_type]
        if row["kind"] == "vlm":  # BLIP, BLIP-2: rows of their own
            continue
        cell = row["vision"]
        if cell.startswith("unsupported: "):
            reason = VISION_NOT_SERVED[model_type]
            assert cell == f"unsupported: {reason}"
        else:
            assert cell in ("tested", "claimed"), (model_type, cell)


@pytest.mark.parametrize("model_type", ["dinat", "timm_backbone"])
def test_a_refused_type_says_why_at_load(model_type):
    from skvlm.models._traits import VISION_NOT_SERVED

    reason = VISION_NOT_SERVED[model_type]
    with pytest.raises(
        ValueError, match=rf"{re.escape(repr(model_type))}.*stage 'vision'.*"
    ) as error:
        adapter_class(CONFIG_MAPPING[model_type]())
    assert reason in str(error.value)


@pytest.mark.skipif(
    is_torchvision_available() or not (WORLD / "torchvision").is_dir(),
    reason="runs the torchvision cases in the torchvision world, from outside it",
)
def test_torchvision_backbones_pass_in_the_torchvision_world():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(WORLD), str(ROOT / "tests"), str(ROOT)]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    }
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "_torchvision_world",
            "-p",
            "no:xdist",
            "-q",
            "-rs",
            "tests/models/test_backbones.py",
            # VideoPrism (its video processor needs torchvision)
            "tests/models/test_videoprism.py",
            "-k",
            "timm_wrapper or depth_pro or videoprism",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    # timm and Depth Pro: 2; VideoPrism: 7
    assert "9 passed" in child.stdout, child.stdout[-2000:]
