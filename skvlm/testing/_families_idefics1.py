"""The tiny IDEFICS (v1) checkpoint.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the real processor class (``IdeficsProcessor`` over its PIL image
processor) with an offline word-level tokenizer. As in the real checkpoints,
``<fake_token_around_image>`` and ``<image>`` are the tokenizer's last two ids
and live in the decoupled embedding's ``additional_vocab_size`` rows (and the
LM head's extra outputs). IDEFICS initialises the gates of its gated
cross-attention layers (``alpha_cross_attn``, ``alpha_dense``) to zero, which
would leave the image without any effect on the language model; the tiny
checkpoint draws them at random, as a trained checkpoint has them.
"""

from __future__ import annotations

import torch

from ._generative import _builder, _merge, _save, _tokenizer

__all__ = ["make_tiny_idefics"]

#: The tokens IDEFICS's processor writes around each image, kept in the
#: decoupled embedding's additional rows (ids ``vocab_size`` and up).
IDEFICS_IMAGE_TOKENS = ("<fake_token_around_image>", "<image>")


def _open_gates(model):
    """Draw the cross-attention layers' tanh gates (``alpha_*``) in [0.5, 1]."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("alpha_"):
                param.uniform_(0.5, 1.0)
    return model


@_builder("idefics")
def make_tiny_idefics(path, *, seed=0, **overrides):
    """Tiny IDEFICS (v1): CLIP-like tower (32 px images, 8 px patches, 3
    blocks, a class token), a 2-block perceiver resampler to 4 latents, a
    4-block Llama-like decoder with a gated cross-attention layer before
    blocks 0 and 2 (``cross_layer_interval=2``). Gates drawn at random, not
    zero."""
    from transformers import (
        IdeficsConfig,
        IdeficsForVisionText2Text,
        IdeficsImageProcessorPil,
        IdeficsProcessor,
    )

    tokenizer = _tokenizer(
        ["<end_of_utterance>"],
        bos="<s>",
        eos="</s>",
        pad="<unk>",
        padding_side="left",
    )
    # the image tokens last, as in the real tokenizer (ids 32000 and 32001)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<end_of_utterance>", *IDEFICS_IMAGE_TOKENS]}
    )
    processor = IdeficsProcessor(
        image_processor=IdeficsImageProcessorPil(image_size=32),
        tokenizer=tokenizer,
        image_size=32,
    )
    n_words = len(tokenizer) - len(IDEFICS_IMAGE_TOKENS)
    kwargs = _merge(
        dict(
            vocab_size=n_words,
            additional_vocab_size=len(IDEFICS_IMAGE_TOKENS),
            hidden_size=32,
            intermediate_size=64,
            # HF indexes the cross-attention layers by block // interval: the
            # block count must be a multiple of the interval
            num_hidden_layers=4,
            num_attention_heads=4,
            cross_layer_interval=2,
            max_position_embeddings=512,
            use_resampler=True,
            perceiver_config=dict(
                use_resampler=True,
                resampler_n_latents=4,
                resampler_depth=2,
                resampler_n_heads=4,
                resampler_head_dim=8,
            ),
            vision_config=dict(
                embed_dim=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            ),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(
        path,
        lambda config: _open_gates(IdeficsForVisionText2Text(config)),
        IdeficsConfig(**kwargs),
        processor,
        seed,
    )
