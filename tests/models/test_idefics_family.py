"""What is special to Idefics3 and SmolVLM.

Every site against HF's own outputs (images split into different numbers of
tiles, padded patches left out) is in ``test_family_matrix.py``.
"""

import pytest
import transformers

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter
from skvlm.models._idefics import Idefics3Adapter, SmolVLMAdapter

from ._references import DEFAULT_PROMPT, chat

FAMILIES = ["idefics3", "smolvlm"]


@pytest.fixture(scope="module")
def paths(built):
    return {family: built.path(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def images(built):
    return built.images("idefics3")


def test_images_split_into_different_numbers_of_tiles(built):
    assert [ex.facts["tiles"] for ex in built.reference("idefics3")] == [5, 3, 3, 5]


# -- prompts ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family, expected",
    [
        (
            "idefics3",
            "<|begin_of_text|>User:<image>Is it a cat?<end_of_utterance>\nAssistant:",
        ),
        (
            "smolvlm",
            "<|im_start|>User:<image>Is it a cat?<end_of_utterance>\nAssistant:",
        ),
    ],
)
def test_format_prompt(paths, family, expected, monkeypatch):
    adapter = load_adapter(paths[family])
    assert adapter.format_prompt("Is it a cat?") == expected
    assert adapter.format_prompt(None) == expected.replace(
        "Is it a cat?", DEFAULT_PROMPT
    )
    assert adapter.format_prompt("<image> a cat") == "<image> a cat"
    # Without a chat template, the family's known format gives the same text.
    monkeypatch.setattr(adapter.processor, "chat_template", None)
    assert adapter.format_prompt("Is it a cat?") == expected


def test_prompt_with_two_placeholders_is_refused(paths, images):
    vlm = VLMEmbeddingTransformer(
        paths["smolvlm"], stage="language", prompt="<image> <image> a cat"
    )
    with pytest.raises(ValueError, match="batch item 0 holds 2 image placeholders"):
        vlm.fit_transform(images[:1])


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage, pooling",
    [("vision", "cls"), ("vision", "pooler"), ("projector", "text_mean")],
)
def test_pooling_the_stage_lacks_lists_those_it_has(paths, stage, pooling):
    vlm = VLMEmbeddingTransformer(paths["smolvlm"], stage=stage, pooling=pooling)
    with pytest.raises(
        ValueError, match=f"pooling='{pooling}' is not available.*'mean', 'max'"
    ):
        vlm.fit()


# -- loading without torchvision ---------------------------------------------------------
def test_smolvlm_processor_loads_without_torchvision(paths, images):
    processor = SmolVLMAdapter.load_processor(paths["smolvlm"])
    assert isinstance(processor, transformers.SmolVLMProcessor)
    assert type(processor).__name__ == "SmolVLMProcessor"
    text = processor.apply_chat_template(
        chat("a cat"), add_generation_prompt=True, tokenize=False
    )
    batch = processor(images=[images[:1]], text=[text], return_tensors="pt")
    assert "pixel_attention_mask" in batch
    with pytest.raises(ImportError, match="pip install torchvision"):
        processor.video_processor(videos=[])


def test_idefics3_processor_is_the_plain_one(paths):
    processor = Idefics3Adapter.load_processor(paths["idefics3"])
    assert type(processor) is transformers.Idefics3Processor
