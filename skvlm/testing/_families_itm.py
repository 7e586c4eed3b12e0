"""Tiny image-text retrieval checkpoints (BLIP's and BLIP-2's ``*ForImageTextRetrieval``).

A retrieval checkpoint has the same ``model_type`` as the captioning one
(``"blip"``, ``"blip-2"``); its ``architectures`` say which it is, and skvlm serves it as a
CLIP-style model: its vision tower, the image side of its joint space (the
projector) and zero-shot classification through its image-text contrastive
(ITC) embeddings. Same recipe as :mod:`skvlm.testing._families_blip1`: the real
architecture at toy size, BLIP's processor with an offline BERT-style
tokenizer (``[CLS] ... [SEP]``; the text tower pools ``[CLS]``).
"""

from __future__ import annotations

from ._families_blip1 import _bert_tokenizer
from ._generative import _QFORMER, _VISION, _merge, _save

__all__ = ["make_tiny_blip2_retrieval", "make_tiny_blip_retrieval"]


def make_tiny_blip_retrieval(path, *, seed=0, **overrides):
    """Build a tiny random-init ``BlipForImageTextRetrieval`` and save it.

    Parameters
    ----------
    path : str or Path
        Directory to write (``save_pretrained`` layout). Created if missing.
    seed : int, default=0
        Seed for the random weights, so two builds are identical.
    **overrides
        Values merged into the ``BlipConfig`` arguments.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> from skvlm.testing import make_tiny_blip_retrieval
    >>> path = make_tiny_blip_retrieval(tempfile.mkdtemp())
    >>> AutoConfig.from_pretrained(path).architectures
    ['BlipForImageTextRetrieval']
    """
    from transformers import (
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    tokenizer = _bert_tokenizer()
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    ids = tokenizer.convert_tokens_to_ids
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION, initializer_range=0.02),
            text_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                encoder_hidden_size=32,
                max_position_embeddings=64,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=ids("[CLS]"),
                sep_token_id=ids("[SEP]"),
            ),
            image_text_hidden_size=16,
        ),
        overrides,
    )
    return _save(path, BlipForImageTextRetrieval, BlipConfig(**kwargs), processor, seed)


def make_tiny_blip2_retrieval(path, *, seed=0, **overrides):
    """Build a tiny random-init ``Blip2ForImageTextRetrieval`` and save it.

    A ViT tower (32 px images, 8 px patches, 3 blocks) and a 2-layer Q-Former
    with 4 queries, whose text side reads BERT-style ``[CLS] ... [SEP]`` texts.

    Parameters
    ----------
    path : str or Path
        Directory to write (``save_pretrained`` layout). Created if missing.
    seed : int, default=0
        Seed for the random weights, so two builds are identical.
    **overrides
        Values merged into the ``Blip2Config`` arguments.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoConfig
    >>> from skvlm.testing import make_tiny_blip2_retrieval
    >>> path = make_tiny_blip2_retrieval(tempfile.mkdtemp())
    >>> AutoConfig.from_pretrained(path).architectures
    ['Blip2ForImageTextRetrieval']
    """
    from transformers import (
        Blip2Config,
        Blip2ForImageTextRetrieval,
        Blip2Processor,
        BlipImageProcessorPil,
    )

    tokenizer = _bert_tokenizer()
    processor = Blip2Processor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    kwargs = _merge(
        dict(
            vision_config=dict(_VISION, initializer_range=0.02),
            qformer_config=dict(
                _QFORMER,
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                # the text side's feed-forward blocks (ITC's text tower)
                use_qformer_text_input=True,
            ),
            num_query_tokens=4,
            image_text_hidden_size=16,
        ),
        overrides,
    )
    return _save(
        path, Blip2ForImageTextRetrieval, Blip2Config(**kwargs), processor, seed
    )
