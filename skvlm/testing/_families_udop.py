"""The tiny UDOP checkpoint.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size (``UdopForConditionalGeneration``), the real processor class
(``UdopProcessor``: a LayoutLMv3 image processor without OCR, and a
``UdopTokenizer`` built offline over a word-level Unigram vocabulary).
"""

from __future__ import annotations

from ._generative import _TEMPLATE_WORDS, _builder, _merge, _save
from ._tokenizer import BASE_WORDS

__all__ = ["make_tiny_udop"]

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
