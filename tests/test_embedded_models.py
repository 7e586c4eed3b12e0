"""The models shipped in the package: they load by name and are trained, not random.

These tests read the shipped weights (``skvlm/_data/models``); they never retrain.
The split is the one ``scripts/train_embedded_models.py`` trained on, rebuilt here
from scikit-learn so that the test images are images the models never saw. The
tiny LLaVAs were trained with a class-frequency schedule (``schedule.json`` beside
their weights): the tests check that they show its effect.
"""

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm import VLMEmbeddingTransformer
from skvlm.analysis import class_frequency
from skvlm.datasets import DIGIT_NAMES, load_digit_images
from skvlm.models._registry import resolve_model

MODELS_DIR = Path(resolve_model("skvlm/tiny-clip")).parent
LLAVAS = ["tiny-llava", "tiny-llava-seed1", "tiny-llava-seed2"]
TEXT_SENTENCES_PER_CLASS = 8  # the text-only stage names each digit 8 times
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


@pytest.mark.parametrize("name", ["tiny-clip", *LLAVAS])
def test_shipped_folder_is_small_and_complete(name):
    path = MODELS_DIR / name
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    expected = EXPECTED_FILES
    if name != "tiny-clip":  # what the model read, and its schedule
        expected = expected | {
            "pretraining_text.txt.gz",
            "instruction_text.jsonl.gz",
            "schedule.json",
        }
    assert expected <= set(files), f"{path} lacks {expected - set(files)}"
    # Nothing but the HF layout: no optimizer state, checkpoint or stray folder.
    assert all(p.is_file() for p in path.iterdir())
    assert not any(n.endswith((".pt", ".bin", ".ckpt")) for n in files)
    assert sum(files.values()) < 1_500_000
    config = (path / "config.json").read_text()
    assert '"float32"' in config


def test_shipped_models_are_small_together():
    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*") if p.is_file())
    assert total < 5_000_000


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


def _schedule(name):
    return json.loads((MODELS_DIR / name / "schedule.json").read_text())


def _answers(name, images):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = resolve_model(f"skvlm/{name}")
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
    inputs = processor(
        images=images, text=[prompt] * len(images), return_tensors="pt", padding=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=7, do_sample=False)
    return processor.batch_decode(
        out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )


@pytest.fixture(scope="module")
def open_ended(digits):
    """Per model: the test images' true names and the greedy answers (90 images)."""
    data, test = digits
    chosen = test[::5]
    truth = [DIGIT_NAMES[k] for k in data.target[chosen]]
    return {
        name: (truth, _answers(name, [data.images[i] for i in chosen]))
        for name in LLAVAS
    }


@pytest.mark.parametrize("name", LLAVAS)
def test_tiny_llava_names_its_frequent_digits_only(name, open_ended):
    truth, answers = open_ended[name]
    schedule = _schedule(name)
    assert all(a.startswith("The photo features a") for a in answers)
    # the paper's measure: the true name occurs in the answer
    correct = np.array([t in a for t, a in zip(truth, answers, strict=True)])
    by_class = {d: correct[np.array(truth) == d].mean() for d in set(truth)}
    most, never = schedule["order"][0], schedule["order"][-1]
    assert schedule["share"][most] == 1 and schedule["share"][never] == 0
    assert by_class[most] > 0.8  # named in every training answer
    assert by_class[never] == 0  # never named after an image
    assert correct.mean() < 0.5  # far below tiny-clip's zero-shot (> 0.9)
    generic = ("digit", "number", "symbol", "sign")
    assert np.mean([a.split()[4] in generic for a in answers]) > 0.4


def test_open_ended_accuracy_follows_the_named_count(open_ended):
    counts, accuracy = [], []
    for name in LLAVAS:
        truth, answers = open_ended[name]
        named = _schedule(name)["named"]
        for digit in DIGIT_NAMES:
            hits = [d in a for d, a in zip(truth, answers, strict=True) if d == digit]
            counts.append(named[digit])
            accuracy.append(np.mean(hits))
    assert len(counts) == 30
    result = stats.spearmanr(counts, accuracy)
    assert result.statistic > 0.5 and result.pvalue < 0.01


@pytest.mark.parametrize("name", LLAVAS)
def test_saved_training_text_counts_the_schedule(name):
    """skvlm.analysis on the saved text recovers the schedule's named counts."""
    path = MODELS_DIR / name
    with gzip.open(path / "pretraining_text.txt.gz", "rt") as f:
        pretraining = f.read().splitlines()
    with gzip.open(path / "instruction_text.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1347 * 7  # every training rendering once
    counts = class_frequency(
        itertools.chain(pretraining, (r["text"] for r in rows)),
        DIGIT_NAMES,
        # the paper's nltk tokens once; the 30x faster word runs count the same here
        tokenizer="nltk" if name == "tiny-llava" else "words",
    )
    named = _schedule(name)["named"]
    expected = [named[d] + TEXT_SENTENCES_PER_CLASS for d in DIGIT_NAMES]
    assert counts.tolist() == expected
    assert max(named.values()) > 900 and min(named.values()) == 0


def test_probe_on_tiny_llava_beats_its_answers(digits):
    data, test = digits
    _, train = train_test_split(
        np.setdiff1d(np.arange(len(data.target)), test),
        test_size=500,
        stratify=np.delete(data.target, test),
        random_state=0,
    )
    vlm = VLMEmbeddingTransformer(
        "skvlm/tiny-llava", stage="language", layer=-1, pooling="mean"
    )
    probe = make_pipeline(vlm, StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit([data.images[i] for i in train], data.target[train])
    chosen = test[::5]
    accuracy = probe.score([data.images[i] for i in chosen], data.target[chosen])
    assert accuracy > 0.75  # its answers name the digit for under half the images
