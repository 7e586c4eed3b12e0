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

__all__ = ["make_tiny_kosmos2"]

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
            text_config=dict(
                vocab_size=len(tokenizer),
                embed_dim=32,
                ffn_dim=64,
                layers=3,
                attention_heads=4,
                max_position_embeddings=512,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
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
