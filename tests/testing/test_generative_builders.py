"""The tiny generative VLM builders: each family builds, round-trips through
``from_pretrained`` and runs a forward pass on two images of different sizes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import is_torchvision_available

from skvlm.testing._generative import GENERATIVE_FAMILIES, load_processor

# family -> (model class, processor class), the names a real checkpoint loads as.
EXPECTED_CLASSES = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
    "paligemma": ("PaliGemmaForConditionalGeneration", "PaliGemmaProcessor"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
    "smolvlm": ("SmolVLMForConditionalGeneration", "SmolVLMProcessor"),
    "blip2": ("Blip2ForConditionalGeneration", "Blip2Processor"),
    "instructblip": ("InstructBlipForConditionalGeneration", "InstructBlipProcessor"),
}
VIDEO_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "smolvlm"}
NESTED_IMAGES = {
    "idefics3",
    "smolvlm",
}  # processors that take one image list per prompt
PROMPT = "What type of object is in this photo?"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """family -> (path, model, processor), each built once for the module."""
    out = {}
    for family, build in GENERATIVE_FAMILIES.items():
        path = build(tmp_path_factory.mktemp(family))
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        out[family] = (path, model, load_processor(path))
    return out


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    sizes = [(32, 32), (40, 64)]  # (height, width): square and wide
    return [
        Image.fromarray(rng.integers(0, 256, (*s, 3), dtype=np.uint8)) for s in sizes
    ]


def _inputs(family, processor, images):
    if processor.chat_template is not None:
        messages = [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": PROMPT}],
            }
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
    else:
        text = PROMPT
    batch_images = [[im] for im in images] if family in NESTED_IMAGES else images
    inputs = processor(
        images=batch_images,
        text=[text] * len(images),
        padding=True,
        return_tensors="pt",
    )
    inputs.pop("labels", None)  # PaliGemma's processor returns them; no loss wanted
    return text, inputs


def test_every_family_has_a_builder():
    assert set(GENERATIVE_FAMILIES) == set(EXPECTED_CLASSES)


@pytest.mark.parametrize("family", sorted(EXPECTED_CLASSES))
def test_round_trip_classes(built, family):
    path, model, processor = built[family]
    model_name, processor_name = EXPECTED_CLASSES[family]
    assert type(model).__name__ == model_name
    assert type(processor).__name__ == processor_name
    saved = json.loads((path / "processor_config.json").read_text())
    assert saved["processor_class"] == processor_name
    if family not in VIDEO_FAMILIES or is_torchvision_available():
        assert type(AutoProcessor.from_pretrained(path)).__name__ == processor_name
    if family in VIDEO_FAMILIES:
        # Users with torchvision get the video processor from the nested config.
        assert saved["video_processor"]["video_processor_type"].endswith(
            "VideoProcessor"
        )


@pytest.mark.parametrize("family", sorted(EXPECTED_CLASSES))
def test_tiny_sizes(built, family):
    _, model, processor = built[family]
    config = model.config
    assert config.vision_config.hidden_size == 32
    assert config.vision_config.num_hidden_layers == 3
    assert config.text_config.hidden_size == 32
    assert config.text_config.num_hidden_layers == 3
    # The processor may add tokens (PaliGemma, Idefics3): the LM covers them all.
    assert config.text_config.vocab_size == len(processor.tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 500_000


def _expected_image_tokens(family, model, processor, inputs):
    """Placeholder tokens per image, computed from the processed pixels."""
    if family in ("llava", "paligemma"):
        return [16, 16]  # (32 / 8) ** 2 patches, CLS dropped (LLaVA) or absent (SigLIP)
    if family in ("blip2", "instructblip"):
        return [model.config.num_query_tokens] * 2
    if family.startswith("qwen"):
        return [
            int(t * h * w) // 4 for t, h, w in inputs["image_grid_thw"]
        ]  # 2x2 merge
    if family in NESTED_IMAGES:
        # 4 tokens per 32 px tile (16 patches, pixel shuffle 2), padding tiles excluded
        tiles = inputs["pixel_attention_mask"].flatten(2).any(-1).sum(-1)
        return [4 * int(n) for n in tiles]
    return None  # llava_next: anyres, checked through the model below


def _spread(x):
    """Smallest per-feature std across tokens: ~0 means a degenerate init."""
    x = x.reshape(-1, x.shape[-1]).float()
    return x.std(0).min().item()


def _vision_hidden_states(family, model, inputs):
    """The tower's own hidden states (forward doesn't return them for every family)."""
    if family in ("blip2", "instructblip"):
        tower = model.vision_model
    else:
        tower = (
            getattr(model.model, "vision_tower", None)
            or getattr(model.model, "visual", None)
            or model.model.vision_model
        )
    kwargs = {"grid_thw": inputs["image_grid_thw"]} if family.startswith("qwen") else {}
    pixels = inputs["pixel_values"]
    if pixels.dim() == 5:  # tiles: (batch, tiles, 3, H, W); the first tile of each row
        pixels = pixels[:, 0]
    return tower(pixels, output_hidden_states=True, **kwargs).hidden_states


@pytest.mark.parametrize("family", sorted(EXPECTED_CLASSES))
def test_forward_two_image_sizes(built, images, family):
    _, model, processor = built[family]
    _, inputs = _inputs(family, processor, images)
    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is None:
        image_token_id = model.config.image_token_index
    n_image_tokens = (inputs["input_ids"] == image_token_id).sum(-1).tolist()
    expected = _expected_image_tokens(family, model, processor, inputs)
    if expected is not None:
        assert n_image_tokens == expected
    if family.startswith("qwen") or family == "llava_next":
        assert n_image_tokens[0] != n_image_tokens[1]  # dynamic resolution

    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
        vision = _vision_hidden_states(family, model, inputs)
    lm = out.language_model_outputs if family in ("blip2", "instructblip") else out
    assert len(lm.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert len(vision) == model.config.vision_config.num_hidden_layers + 1
    assert lm.hidden_states[-1].shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(out.logits).all()
    # Random init must give distinct tokens at every stage, or equality tests
    # against HF's outputs pass vacuously (BLIP-2's default vision init std is 1e-10).
    for h in (*vision, *lm.hidden_states):
        assert _spread(h) > 1e-3


@pytest.mark.parametrize(
    "family", ["llava", "qwen2_vl", "paligemma", "smolvlm", "instructblip"]
)
def test_prompt_format(built, family):
    """The saved chat template (or the processor's own format) renders the
    family's known prompt layout."""
    _, _, processor = built[family]
    _, inputs = _inputs(family, processor, [Image.new("RGB", (32, 32))])
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    joined = " ".join(t for t in tokens if t not in ("<image>", "<|image_pad|>"))
    expected = {
        "llava": "<s> USER : What type of object is in this photo ? ASSISTANT :",
        "qwen2_vl": (
            "<|im_start|> system You are a helpful assistant . <|im_end|> "
            "<|im_start|> user <|vision_start|> <|vision_end|> What type of "
            "object is in this photo ? <|im_end|> <|im_start|> assistant"
        ),
        "paligemma": "<bos> What type of object is in this photo ?",
        "instructblip": "<s> What type of object is in this photo ?",
    }
    if family == "smolvlm":
        assert tokens[:3] == ["<|im_start|>", "User", ":"]
        assert tokens[-4:] == ["?", "<end_of_utterance>", "Assistant", ":"]
        assert "<global-img>" in tokens
    else:
        assert joined == expected[family]


def test_overrides_and_seed(tmp_path):
    from skvlm.testing._generative import make_tiny_llava

    a = make_tiny_llava(
        tmp_path / "a",
        seed=1,
        vision_feature_layer=-1,
        text_config={"num_hidden_layers": 2},
    )
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    b = make_tiny_llava(tmp_path / "b", seed=1)
    assert torch.equal(torch.rand(1), expected_draw)  # caller's RNG untouched
    c = make_tiny_llava(tmp_path / "c", seed=2)
    ma, mb, mc = (AutoModelForImageTextToText.from_pretrained(p) for p in (a, b, c))
    assert ma.config.vision_feature_layer == -1
    assert ma.config.text_config.num_hidden_layers == 2
    assert ma.config.text_config.hidden_size == 32  # merged, not replaced
    wb = mb.model.multi_modal_projector.linear_1.weight
    assert torch.equal(
        wb,
        AutoModelForImageTextToText.from_pretrained(
            b
        ).model.multi_modal_projector.linear_1.weight,
    )
    assert not torch.equal(wb, mc.model.multi_modal_projector.linear_1.weight)


@pytest.mark.skipif(
    is_torchvision_available(), reason="checks the torchvision-free path"
)
def test_load_processor_without_torchvision(built):
    path, _, processor = built["qwen2_vl"]
    with pytest.raises(ImportError, match="(?i)torchvision"):
        AutoProcessor.from_pretrained(path)
    with pytest.raises(ImportError, match="pip install torchvision"):
        processor.video_processor([np.zeros((2, 32, 32, 3), dtype=np.uint8)])
    # Re-saving keeps the real class name, so the directory still loads.
    resaved = path.parent / "resaved"
    processor.save_pretrained(resaved)
    saved = json.loads((resaved / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2VLProcessor"
    # skvlm picks the processor loader by the model's family, read from its config.
    (resaved / "config.json").write_bytes((path / "config.json").read_bytes())
    assert type(load_processor(resaved)).__name__ == "Qwen2VLProcessor"
