"""The tiny Mllama (Llama 3.2 Vision) checkpoint.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the real processor class with an offline word-level tokenizer. Mllama
initialises its gates (tile and position embeddings, the cross-attention
layers' attention and MLP gates) to zero, which would leave the image without
any effect on the language model; the tiny checkpoint draws them at random, as
a trained checkpoint has them.
"""

from __future__ import annotations

import torch

from ._generative import _TEXT, _builder, _merge, _save, _tokenizer

__all__ = ["make_tiny_mllama"]

MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|image|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% endif %}"
)


def _open_gates(model):
    """Draw every zero-initialised gate (a parameter named ``*gate``) in [0.5, 1]."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rsplit(".", 1)[-1].endswith("gate"):
                param.uniform_(0.5, 1.0)
    return model


@_builder("mllama")
def make_tiny_mllama(path, *, seed=0, **overrides):
    """Tiny Mllama (Llama 3.2 Vision): tiled tower (up to 2 tiles of 32 px, 3
    local and 2 global encoder layers, every local layer also an intermediate
    output), Llama LM whose block 1 is a cross-attention layer reading the
    image. One image list per prompt; gates drawn at random, not zero."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
    )

    tokenizer = _tokenizer(
        [
            "<|image|>",
            "<|python_tag|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        padding_side="left",
    )
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(
            size={"height": 32, "width": 32}, max_image_tiles=2
        ),
        tokenizer=tokenizer,
        chat_template=MLLAMA_TEMPLATE,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                num_hidden_layers=3,
                num_global_layers=2,
                attention_heads=4,
                intermediate_size=64,
                vision_output_dim=128,  # the last layer and 3 intermediate ones
                image_size=32,
                patch_size=8,
                max_num_tiles=2,
                intermediate_layers_indices=[0, 1, 2],
                supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],
            ),
            text_config=dict(
                _TEXT,
                vocab_size=len(tokenizer),
                cross_attention_layers=[1],
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
            image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
        ),
        overrides,
    )
    return _save(
        path,
        lambda config: _open_gates(MllamaForConditionalGeneration(config)),
        MllamaConfig(**kwargs),
        processor,
        seed,
    )
