"""The models shipped in the package: they load by name and are trained, not random.

These tests read the shipped weights (``skvlm/_data/models``); they never retrain.
The split is the one ``scripts/train_embedded_models.py`` trained on, rebuilt here
from scikit-learn so that the test images are images the models never saw.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from skvlm import VLMEmbeddingTransformer
from skvlm.datasets import DIGIT_NAMES, load_digit_images
from skvlm.models._registry import resolve_model

MODELS_DIR = Path(resolve_model("skvlm/tiny-clip")).parent
EXPECTED_FILES = {
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
}


@pytest.fixture(scope="module")
def digits():
    """The clean digits and the held-out test indices of the training script."""
    data = load_digit_images(size=32)
    _, test = train_test_split(
        np.arange(len(data.target)),
        test_size=0.25,
        stratify=data.target,
        random_state=0,
    )
    return data, test


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-llava"])
def test_shipped_folder_is_small_and_complete(name):
    path = MODELS_DIR / name
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    assert EXPECTED_FILES <= set(files), f"{path} lacks {EXPECTED_FILES - set(files)}"
    # Nothing but the HF layout: no optimizer state, checkpoint or stray folder.
    assert all(p.is_file() for p in path.iterdir())
    assert not any(n.endswith((".pt", ".bin", ".ckpt")) for n in files)
    assert sum(files.values()) < 3_000_000
    config = (path / "config.json").read_text()
    assert '"float32"' in config


@pytest.mark.parametrize("name", ["skvlm/tiny-clip", "skvlm/tiny-llava"])
def test_loads_by_name_through_the_transformer(name, digits):
    data, test = digits
    images = [data.images[i] for i in test[:4]]
    vlm = VLMEmbeddingTransformer(name, stage="vision", layer=-1, pooling="cls")
    features = vlm.fit_transform(images)
    # Reference: HF's own vision tower, last hidden state, CLS token.
    from transformers import AutoModel, AutoProcessor

    path = resolve_model(name)
    model = AutoModel.from_pretrained(path).eval()
    tower = model.vision_model if hasattr(model, "vision_model") else model.vision_tower
    pixels = AutoProcessor.from_pretrained(path).image_processor(
        images=images, return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode():
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(features, hidden[-1][:, 0].numpy(), atol=1e-5)


def test_tiny_clip_zero_shot_is_well_above_chance(digits):
    from transformers import CLIPModel, CLIPProcessor

    data, test = digits
    path = resolve_model("skvlm/tiny-clip")
    model = CLIPModel.from_pretrained(path).eval()
    processor = CLIPProcessor.from_pretrained(path)
    texts = [f"a photo of the digit {name}." for name in DIGIT_NAMES]
    with torch.inference_mode():
        image = model.get_image_features(
            **processor(images=[data.images[i] for i in test], return_tensors="pt")
        ).pooler_output
        text = model.get_text_features(
            **processor(text=texts, padding=True, return_tensors="pt")
        ).pooler_output
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    predicted = (image @ text.T).argmax(-1).numpy()
    accuracy = np.mean(predicted == data.target[test])
    assert accuracy > 0.5  # chance is 0.1


def test_tiny_llava_answers_with_the_digit(digits):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    data, test = digits
    path = resolve_model("skvlm/tiny-llava")
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "What type of object is in this photo?"},
            ],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "USER: <image>\nWhat type of object is in this photo? ASSISTANT:"
    chosen = test[::5]  # 90 images, 9 of each class on average
    inputs = processor(
        images=[data.images[i] for i in chosen],
        text=[prompt] * len(chosen),
        return_tensors="pt",
        padding=True,
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=7, do_sample=False)
    answers = processor.batch_decode(
        out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    named = [
        [w for w in a.replace(".", " ").split() if w in DIGIT_NAMES] for a in answers
    ]
    assert np.mean([len(n) > 0 for n in named]) > 0.9
    assert answers[0].startswith("The photo features a")
    correct = [
        n[:1] == [DIGIT_NAMES[k]]
        for n, k in zip(named, data.target[chosen], strict=True)
    ]
    assert np.mean(correct) > 0.4  # chance is 0.1
