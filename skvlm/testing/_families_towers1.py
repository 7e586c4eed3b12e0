"""Tiny ShieldGemma 2 (Gemma 3 inside an image classifier), as its hub
checkpoint is laid out.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the real processor class with an offline word-level tokenizer, saved
with ``save_pretrained``.
"""

from __future__ import annotations

from ._families import _named_tokenizer
from ._generative import _TEXT, _VISION, _builder, _merge, _save

__all__ = ["SHIELDGEMMA2_TEMPLATE", "make_tiny_shieldgemma2"]

#: A chat template shaped like ShieldGemma 2's own: a user turn per content
#: item (the image; then the text, read as a safety policy inside a fixed
#: instruction), and the model's turn always opened. The instruction's words
#: are a short stand-in for the real one.
SHIELDGEMMA2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% for item in message['content'] %}{{ '<start_of_turn>user\n' }}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}"
    "{{ 'is this image in violation of the policy ?\n' + item['text'] + '\n' }}"
    "{{ 'answer yes or no .<end_of_turn>\n' }}{% endif %}{% endfor %}"
    "{{ '<start_of_turn>model\n' }}{% endfor %}"
)

#: Toy safety policies (the processor's ``policy_definitions``).
POLICIES = {
    "dogs": "no dog : the image shall not show a dog .",
    "cars": "no red car : the image shall not show a red car .",
}


@_builder("shieldgemma2")
def make_tiny_shieldgemma2(path, *, seed=0, **overrides):
    """Tiny ShieldGemma 2: Gemma 3's SigLIP tower, projector (4 tokens per
    image) and sliding-window language model, saved as
    ``ShieldGemma2ForImageClassification`` (Gemma 3 one ``model.`` deeper, as
    the hub checkpoint holds it) with ``ShieldGemma2Processor`` (one prompt per
    image and policy, two toy policies); its yes and no tokens are the words
    ``yes`` and ``no``."""
    from transformers import (
        Gemma3ImageProcessorPil,
        ShieldGemma2Config,
        ShieldGemma2ForImageClassification,
        ShieldGemma2Processor,
    )

    tokenizer = _named_tokenizer(
        {
            "boi_token": "<start_of_image>",
            "image_token": "<image_soft_token>",
            "eoi_token": "<end_of_image>",
        },
        ["<start_of_turn>", "<end_of_turn>", "model"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        padding_side="left",
    )
    processor = ShieldGemma2Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=SHIELDGEMMA2_TEMPLATE,
        policy_definitions=POLICIES,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION, model_type="siglip_vision_model"),
            text_config=dict(
                _TEXT,
                model_type="gemma3_text",
                vocab_size=len(tokenizer),
                sliding_window=16,
                pad_token_id=tokenizer.pad_token_id,
            ),
            mm_tokens_per_image=4,
            boi_token_index=tokenizer.boi_token_id,
            eoi_token_index=tokenizer.eoi_token_id,
            image_token_index=tokenizer.image_token_id,
            yes_token_index=tokenizer.convert_tokens_to_ids("yes"),
            no_token_index=tokenizer.convert_tokens_to_ids("no"),
        ),
        overrides,
    )
    return _save(
        path,
        ShieldGemma2ForImageClassification,
        ShieldGemma2Config(**kwargs),
        processor,
        seed,
    )
