"""Tiny encoder-decoders whose encoder reads the image alone.

Pix2Struct (a Pix2Struct vision encoder over flattened patches, a T5-style
text decoder) and ``vision-encoder-decoder`` (a ViT encoder, a TrOCR decoder
of another width, so the model holds its ``enc_to_dec_proj``). Same recipe
as :mod:`skvlm.testing._families`: the real architecture at toy size, the
family's real processor class (``Pix2StructProcessor``, ``TrOCRProcessor``)
with the offline word-level tokenizer, saved with ``save_pretrained``.
"""

from __future__ import annotations

from ._families_encdec import bart_style_tokenizer, t5_style_tokenizer
from ._generative import _merge, _save

__all__ = ["make_tiny_pix2struct", "make_tiny_vision_encoder_decoder"]

#: The tiny Pix2Struct's patch budget per image (8 x 8 px patches).
PIX2STRUCT_MAX_PATCHES = 16


def make_tiny_pix2struct(path, *, seed=0, vqa=False, **overrides):
    """Tiny Pix2Struct: a 2-block vision encoder over at most 16 patches of
    8 x 8 px per image (each at its own aspect ratio, padded with zero rows),
    a 2-block T5-style decoder that starts at ``<pad>``, and a T5-style
    tokenizer (``text </s>``).

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int, default=0
        Seed of the random init: the same seed gives the same weights.
    vqa : bool, default=False
        Build a VQA checkpoint (``is_vqa``), whose processor renders the
        prompt as a header onto the image with transformers' font (fetched
        from the Hub, or its cache); the default is a captioning one.
    **overrides
        Keyword arguments of ``Pix2StructConfig``, replacing the tiny
        defaults; ``vision_config`` and ``text_config`` dicts merge key by key.

    Returns
    -------
    path : Path
        The directory, holding config, weights, processor and tokenizer.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> from skvlm.testing import make_tiny_pix2struct
    >>> AutoConfig.from_pretrained(make_tiny_pix2struct(tempfile.mkdtemp())).model_type
    'pix2struct'
    """
    from transformers import (
        Pix2StructConfig,
        Pix2StructForConditionalGeneration,
        Pix2StructImageProcessorPil,
        Pix2StructProcessor,
    )

    tokenizer = t5_style_tokenizer()
    processor = Pix2StructProcessor(
        image_processor=Pix2StructImageProcessorPil(
            max_patches=PIX2STRUCT_MAX_PATCHES,
            patch_size={"height": 8, "width": 8},
            is_vqa=vqa,
        ),
        tokenizer=tokenizer,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                patch_embed_hidden_size=8 * 8 * 3,
                d_ff=64,
                d_kv=8,
                num_hidden_layers=2,
                num_attention_heads=4,
                seq_len=PIX2STRUCT_MAX_PATCHES,
                relative_attention_num_buckets=8,
            ),
            text_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
                # T5's 1.0 init gives the decoder a usable spread at this width
                initializer_factor=1.0,
            ),
            decoder_start_token_id=tokenizer.pad_token_id,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            is_vqa=vqa,
        ),
        overrides,
    )
    return _save(
        path,
        Pix2StructForConditionalGeneration,
        Pix2StructConfig(**kwargs),
        processor,
        seed,
    )


#: The tiny decoders a vision-encoder-decoder can have: their config class
#: and their keyword arguments (width 48, 2 blocks, cross-attention).
_DECODERS = {
    "trocr": (
        "TrOCRConfig",
        dict(
            d_model=48,
            decoder_layers=2,
            decoder_attention_heads=4,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            use_learned_position_embeddings=True,
            layernorm_embedding=True,
            init_std=0.2,
        ),
    ),
    "gpt2": (
        "GPT2Config",
        dict(n_embd=48, n_layer=2, n_head=4, n_positions=64, add_cross_attention=True),
    ),
    "mbart": (
        "MBartConfig",
        dict(
            d_model=32,
            decoder_layers=2,
            decoder_attention_heads=4,
            decoder_ffn_dim=64,
            encoder_layers=0,
            max_position_embeddings=64,
            scale_embedding=True,
            is_decoder=True,
            add_cross_attention=True,
            init_std=0.2,
        ),
    ),
    "bert": (
        "BertConfig",
        dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            is_decoder=True,
            add_cross_attention=True,
        ),
    ),
}


def make_tiny_vision_encoder_decoder(
    path, *, seed=0, decoder="trocr", encoder="vit", **overrides
):
    """Tiny vision-encoder-decoder in TrOCR's style: a ViT encoder (32 px
    images, 8 px patches, a class token, width 32, 2 blocks), a decoder of
    width 48 (2 blocks) that cross-attends to the encoder through
    ``enc_to_dec_proj`` (32 -> 48) and starts at ``</s>``, and a BART-style
    tokenizer (``<s> text </s>``) in a ``TrOCRProcessor``. Or in Donut's
    style (``encoder="donut-swin"``, ``decoder="mbart"``): a two-stage Swin
    encoder of final width 32, an MBart decoder of the same width (no
    ``enc_to_dec_proj``) and a ``DonutProcessor``.

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int, default=0
        Seed of the random init: the same seed gives the same weights.
    decoder : {"trocr", "gpt2", "bert", "mbart"}, default="trocr"
        The decoder: TrOCR's (learned positions, no final norm), GPT-2 (a
        final ``ln_f``), BERT (a causal BERT with cross-attention) or MBart
        (width 32, a final ``layer_norm``).
    encoder : {"vit", "donut-swin"}, default="vit"
        The encoder: ViT, or Donut's Swin (with Donut's image processor).
    **overrides
        ``encoder_config`` and ``decoder_config`` dicts update the encoder's
        and the decoder's config keyword arguments; other keys are set on the
        ``VisionEncoderDecoderConfig``.

    Returns
    -------
    path : Path
        The directory, holding config, weights, processor and tokenizer.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> from skvlm.testing import make_tiny_vision_encoder_decoder
    >>> path = make_tiny_vision_encoder_decoder(tempfile.mkdtemp(), decoder="gpt2")
    >>> AutoConfig.from_pretrained(path).decoder.model_type
    'gpt2'
    """
    import transformers
    from transformers import (
        DonutImageProcessorPil,
        DonutProcessor,
        DonutSwinConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    tokenizer = bart_style_tokenizer()
    if encoder == "donut-swin":
        processor = DonutProcessor(
            image_processor=DonutImageProcessorPil(size={"height": 32, "width": 32}),
            tokenizer=tokenizer,
        )
        encoder_class = DonutSwinConfig
        encoder_kwargs = dict(
            image_size=32,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[2, 4],
            window_size=4,
            drop_path_rate=0.0,
        )
    else:
        processor = TrOCRProcessor(
            image_processor=ViTImageProcessorPil(size={"height": 32, "width": 32}),
            tokenizer=tokenizer,
        )
        encoder_class = ViTConfig
        encoder_kwargs = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    config_class, text = _DECODERS[decoder]
    text = dict(
        text,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )
    kwargs = _merge(dict(encoder_config=encoder_kwargs, decoder_config=text), overrides)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        encoder_class(**kwargs.pop("encoder_config")),
        getattr(transformers, config_class)(**kwargs.pop("decoder_config")),
    )
    config.decoder_start_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    for key, value in kwargs.items():
        setattr(config, key, value)
    return _save(path, VisionEncoderDecoderModel, config, processor, seed)
