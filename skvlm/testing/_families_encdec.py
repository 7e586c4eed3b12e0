"""Tiny random-init checkpoints of encoder-decoder image-text families.

Florence-2 (DaViT tower, projector, BART language model), BLIP-2 and
InstructBLIP with a Flan-T5 language model. Same recipe as
:mod:`skvlm.testing._families`: the real architecture at toy size, the
family's real processor class with an offline word-level tokenizer framed as
the family's own (BART's ``<s> text </s>``, T5's ``text </s>``), saved with
``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from ._generative import (
    _QFORMER,
    _TEXT,
    _VISION,
    _builder,
    _merge,
    _save,
    _tokenizer,
    instructblip,
)
from ._vision import no_zero_weights

__all__ = [
    "make_tiny_blip2_t5",
    "make_tiny_florence2",
    "make_tiny_instructblip_t5",
    "make_tiny_t5gemma2",
]

#: Florence-2's image side: 64 px, four DaViT stages down to a 2 x 2 map, so
#: 4 spatial tokens and 1 temporal token per image.
FLORENCE2_IMAGE = 64
FLORENCE2_IMAGE_TOKENS = 5


def bart_style_tokenizer(specials=(), **named):
    """The offline word-level tokenizer with BART's ``<s> text </s>`` framing.

    ``named`` gives the named special tokens (``image_token="<image>"``).
    """
    base = _tokenizer(
        list(dict.fromkeys([*named.values(), *specials])),
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        padding_side="right",
    )
    backend = base.backend_tokenizer
    ids = {t: base.convert_tokens_to_ids(t) for t in ("<s>", "</s>")}
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=list(ids.items()),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token=base.unk_token,
        padding_side="right",
        extra_special_tokens=dict(named),
    )


@_builder("florence2")
def make_tiny_florence2(path, *, seed=0, **overrides):
    """Tiny Florence-2: DaViT tower (4 stages of widths 8-32, 5 blocks), the
    projector (5 tokens per 64 px image: 2 x 2 spatial + 1 temporal), BART
    language model (3 encoder and 2 decoder layers)."""
    from transformers import (
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tokenizer = bart_style_tokenizer(image_token="<image>")
    processor = Florence2Processor(
        image_processor=CLIPImageProcessorPil(
            size={"height": FLORENCE2_IMAGE, "width": FLORENCE2_IMAGE},
            do_center_crop=False,
            image_seq_length=FLORENCE2_IMAGE_TOKENS,
        ),
        tokenizer=tokenizer,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                depths=[1, 1, 2, 1],
                embed_dim=[8, 16, 24, 32],
                num_heads=[1, 2, 2, 4],
                num_groups=[1, 2, 2, 4],
                window_size=2,
                projection_dim=32,
                max_position_embeddings=8,
                max_temporal_embeddings=4,
                drop_path_rate=0.0,
            ),
            text_config=dict(
                model_type="bart",
                vocab_size=len(tokenizer),
                d_model=32,
                encoder_layers=3,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                max_position_embeddings=128,
                # BART's default 0.02 leaves the decoder's answer all but blind
                # to the image at this width (scores equal to 1e-5 across images)
                init_std=0.2,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.eos_token_id,
                forced_eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_id=tokenizer.image_token_id,
        ),
        overrides,
    )
    return _save(
        path,
        Florence2ForConditionalGeneration,
        Florence2Config(**kwargs),
        processor,
        seed,
    )


def t5_style_tokenizer(specials=()):
    """The offline word-level tokenizer with T5's framing: ``text </s>``, no BOS,
    ``<pad>`` (T5's decoder start token) and ``<unk>``."""
    tokenizer = _tokenizer(
        ["<image>", *specials], eos="</s>", pad="<pad>", padding_side="right"
    )
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>",
        pair="$A </s> $B </s>",
        special_tokens=[("</s>", tokenizer.eos_token_id)],
    )
    return tokenizer


def _t5_text(tokenizer):
    """A Flan-T5 language model at toy size: gated-GELU feed-forward, untied
    head, 3 encoder and 2 decoder blocks; the decoder starts at ``<pad>``."""
    return dict(
        model_type="t5",
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=3,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        is_encoder_decoder=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


@_builder("blip-2")
def make_tiny_blip2_t5(path, *, seed=0, **overrides):
    """Tiny BLIP-2 with a Flan-T5 language model: ViT tower, 2-layer Q-Former
    with 4 queries, T5 encoder-decoder (3 + 2 blocks) behind a T5-style
    tokenizer (``text </s>``)."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessorPil,
    )

    tokenizer = t5_style_tokenizer()
    processor = Blip2Processor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        num_query_tokens=4,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _VISION, model_type="blip_2_vision_model", initializer_range=0.02
            ),
            qformer_config=dict(_QFORMER, vocab_size=64),
            text_config=_t5_text(tokenizer),
            num_query_tokens=4,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        ),
        overrides,
    )
    return _save(
        path, Blip2ForConditionalGeneration, Blip2Config(**kwargs), processor, seed
    )


@_builder("instructblip")
def make_tiny_instructblip_t5(path, *, seed=0, **overrides):
    """Tiny InstructBLIP with a Flan-T5 language model: BLIP-2's T5 model with
    an instruction-aware Q-Former (its own BERT-style tokenizer in
    ``qformer_tokenizer/``)."""
    tokenizer = t5_style_tokenizer()
    return instructblip(path, tokenizer, _t5_text, seed, overrides)


@_builder("t5gemma2")
def make_tiny_t5gemma2(path, *, seed=0, **overrides):
    """Tiny T5Gemma 2: SigLIP tower, Gemma 3's projector (4 tokens per image),
    a Gemma encoder (3 layers) and decoder (2 layers) with sliding-window
    layers, Gemma 3's processor without a chat template (the encoder reads
    ``"<start_of_image>\\n{prompt}"``)."""
    from transformers import (
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        T5Gemma2Config,
        T5Gemma2ForConditionalGeneration,
    )

    from ._families import _named_tokenizer

    tokenizer = _named_tokenizer(
        {
            "boi_token": "<start_of_image>",
            "image_token": "<image_soft_token>",
            "eoi_token": "<end_of_image>",
        },
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        padding_side="left",
    )
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        image_seq_length=4,
    )
    text = dict(
        _TEXT,
        vocab_size=len(tokenizer),
        sliding_window=16,
        query_pre_attn_scalar=8,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    kwargs = _merge(
        dict(
            encoder=dict(
                text_config=text,
                vision_config=dict(_VISION, model_type="siglip_vision_model"),
                mm_tokens_per_image=4,
                boi_token_index=tokenizer.boi_token_id,
                eoi_token_index=tokenizer.eoi_token_id,
                image_token_index=tokenizer.image_token_id,
            ),
            decoder=dict(text, num_hidden_layers=2),
            image_token_index=tokenizer.image_token_id,
        ),
        overrides,
    )
    config = T5Gemma2Config(**kwargs)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5Gemma2ForConditionalGeneration(config).eval()
        # Gemma's init leaves the projection at zero: every image token would
        # be the same; a random one makes the projector stage testable.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("mm_input_projection_weight"):
                    param.normal_(std=0.5)
        no_zero_weights(model)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
