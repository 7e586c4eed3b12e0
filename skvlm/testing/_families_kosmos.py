"""The tiny Kosmos-2 checkpoint.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the real processor class (``Kosmos2Processor`` over a CLIP image
processor) with an offline word-level tokenizer. Kosmos-2's processor puts
``<image>``, the image's ``num_image_tokens`` positions and ``</image>`` in
front of the prompt and marks the positions in ``image_embeds_position_mask``;
their ids are those after ``<unk>`` (the model overwrites their embeddings).
"""

from __future__ import annotations

from ._generative import _builder, _merge, _save, _tokenizer

__all__ = ["make_tiny_kosmos2", "make_tiny_kosmos2_5"]

#: Image positions per prompt: the tiny model's ``latent_query_num``.
KOSMOS2_IMAGE_TOKENS = 64


@_builder("kosmos-2")
def make_tiny_kosmos2(path, *, seed=0, **overrides):
    """Tiny Kosmos-2: CLIP-like tower (32 px images, 8 px patches, 2 blocks, a
    class token), a perceiver-style image-to-text projection to 64 latent
    queries, and a 3-block pre-norm text decoder with sinusoidal positions."""
    from transformers import (
        CLIPImageProcessorPil,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
    )

    tokenizer = _tokenizer([], bos="<s>", eos="</s>", pad="<pad>", padding_side="left")
    processor = Kosmos2Processor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        num_patch_index_tokens=16,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            ),
            text_config=_text_config(tokenizer),
            latent_query_num=KOSMOS2_IMAGE_TOKENS,
        ),
        overrides,
    )
    return _save(
        path,
        Kosmos2ForConditionalGeneration,
        Kosmos2Config(**kwargs),
        processor,
        seed,
    )


def _text_config(tokenizer):
    """The tiny text decoder of both Kosmos models (3 blocks, width 32)."""
    return dict(
        vocab_size=len(tokenizer),
        embed_dim=32,
        ffn_dim=64,
        layers=3,
        attention_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@_builder("kosmos-2.5")
def make_tiny_kosmos2_5(path, *, seed=0, **overrides):
    """Tiny Kosmos-2.5: Pix2Struct-like tower (at most 16 patches of 8 x 8 px
    per image, 2 blocks, no class token), an image-to-text projection to 8
    latent queries, and a 3-block text decoder with sinusoidal positions."""
    from transformers import (
        Kosmos2_5Config,
        Kosmos2_5ForConditionalGeneration,
        Kosmos2_5ImageProcessorPil,
        Kosmos2_5Processor,
        PreTrainedTokenizerFast,
    )

    words = _tokenizer(["<image>", "</image>"], bos="<s>", eos="</s>", pad="<pad>")
    # Kosmos-2.5's processor reads its markers off the tokenizer's named tokens
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words.backend_tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        extra_special_tokens={
            "boi_token": "<image>",
            "eoi_token": "</image>",
            "image_token": "<s>",
        },
    )
    n_queries = 8
    processor = Kosmos2_5Processor(
        image_processor=Kosmos2_5ImageProcessorPil(
            max_patches=16, patch_size={"height": 8, "width": 8}
        ),
        tokenizer=tokenizer,
        num_image_tokens=n_queries,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                patch_embed_hidden_size=8 * 8 * 3,
                intermediate_size=64,
                head_dim=8,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_num_patches=16,
            ),
            text_config=_text_config(tokenizer),
            latent_query_num=n_queries,
        ),
        overrides,
    )
    return _save(
        path,
        Kosmos2_5ForConditionalGeneration,
        Kosmos2_5Config(**kwargs),
        processor,
        seed,
    )
