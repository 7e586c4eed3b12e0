"""The tiny UDOP and PP-FormulaNet checkpoints.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the real processor class with a tokenizer built offline. UDOP:
``UdopProcessor`` (a LayoutLMv3 image processor without OCR, and a
``UdopTokenizer`` over a word-level Unigram vocabulary). PP-FormulaNet:
``PPFormulaNetProcessor`` (its image processor exists only with torchvision:
its files are written without instantiating it, as for Llama 4) and a
byte-level ``NougatTokenizer`` with no merges (one token per byte).
"""

from __future__ import annotations

from ._families_tvonly import _write_processor, _Written
from ._generative import _TEMPLATE_WORDS, _builder, _merge, _save
from ._tokenizer import BASE_WORDS

__all__ = ["make_tiny_pp_formulanet", "make_tiny_udop"]

#: The tiny UDOP's image side and patch size: a 4 x 4 grid of 16 patches.
UDOP_IMAGE = 32
UDOP_PATCH = 8


def _udop_tokenizer():
    """A ``UdopTokenizer`` over the shared word list, lower case and capitalised
    (its Unigram model, unlike the word-level one, has no lower-casing)."""
    from transformers import UdopTokenizer

    words = list(dict.fromkeys([*BASE_WORDS, *_TEMPLATE_WORDS]))
    pieces = dict.fromkeys(
        [f"\u2581{w}" for w in words]
        + [f"\u2581{w.capitalize()}" for w in words]
        + list(dict.fromkeys(c for w in words for c in w if not c.isalnum()))
    )
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(piece, -1.0) for piece in pieces]
    return UdopTokenizer(vocab=vocab)


@_builder("udop")
def make_tiny_udop(path, *, seed=0, **overrides):
    """Tiny UDOP: a 2-block T5-style encoder over the prompt's words and the
    image's 16 patches (32 px images, 8 px patches), with 1-D, horizontal and
    vertical relative biases, and a 2-block T5-style decoder (width 32)."""
    from transformers import (
        LayoutLMv3ImageProcessorPil,
        UdopConfig,
        UdopForConditionalGeneration,
        UdopProcessor,
    )

    tokenizer = _udop_tokenizer()
    processor = UdopProcessor(
        image_processor=LayoutLMv3ImageProcessorPil(
            apply_ocr=False, size={"height": UDOP_IMAGE, "width": UDOP_IMAGE}
        ),
        tokenizer=tokenizer,
    )
    kwargs = _merge(
        dict(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            image_size=UDOP_IMAGE,
            patch_size=UDOP_PATCH,
            max_2d_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(
        path, UdopForConditionalGeneration, UdopConfig(**kwargs), processor, seed
    )


#: PP-FormulaNet's image side and patch size: an 8 x 8 patch grid, which the
#: projector's two stride-2 convolutions bring to 2 x 2 (4 tokens per image).
FORMULANET_IMAGE = 32
FORMULANET_PATCH = 4


def _byte_tokenizer():
    """A ``NougatTokenizer`` (byte-level BPE) over the 256 byte symbols, no merges."""
    from transformers import NougatTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    symbols = [c for c in bytes_to_unicode().values() if c not in specials]
    vocab = {token: i for i, token in enumerate([*specials, *symbols])}
    return NougatTokenizer(vocab=vocab, merges=[])


@_builder("pp_formulanet")
def make_tiny_pp_formulanet(path, *, seed=0, **overrides):
    """Tiny PP-FormulaNet: a SAM-style windowed ViT encoder (32 px images, 4 px
    patches, 2 blocks, the second global), its neck, a projector of two
    stride-2 convolutions and two linear layers (4 tokens per image), and a
    2-block mBART-style decoder (width 32) that cross-attends to them. Needs
    torchvision to load its image processor."""
    from transformers import PPFormulaNetConfig, PPFormulaNetForConditionalGeneration

    tokenizer = _byte_tokenizer()
    _write_processor(
        path,
        tokenizer,
        {
            "processor_class": "PPFormulaNetProcessor",
            "image_processor": {
                "image_processor_type": "PPFormulaNetImageProcessor",
                "size": {"height": FORMULANET_IMAGE, "width": FORMULANET_IMAGE},
                "do_crop_margin": True,
                "do_thumbnail": True,
                "do_align_long_axis": False,
                "do_pad": True,
                "do_resize": True,
                "do_rescale": True,
                "do_normalize": True,
                "resample": 2,
                "rescale_factor": 1 / 255,
                "image_mean": [0.7931, 0.7931, 0.7931],
                "image_std": [0.1738, 0.1738, 0.1738],
            },
        },
        None,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                output_channels=16,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=FORMULANET_IMAGE,
                patch_size=FORMULANET_PATCH,
                window_size=4,
                global_attn_indexes=[1],
                mlp_dim=64,
                post_conv_in_channels=16,
                post_conv_mid_channels=16,
                post_conv_out_channels=32,
                decoder_hidden_size=32,
            ),
            text_config=dict(
                vocab_size=len(tokenizer),
                d_model=32,
                decoder_layers=2,
                decoder_ffn_dim=64,
                decoder_attention_heads=4,
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.eos_token_id,
                forced_eos_token_id=tokenizer.eos_token_id,
            ),
        ),
        overrides,
    )
    return _save(
        path,
        PPFormulaNetForConditionalGeneration,
        PPFormulaNetConfig(**kwargs),
        _Written(),
        seed,
    )
