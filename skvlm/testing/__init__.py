"""Tiny offline models of every supported family, for tests and for users' tests.

Each ``make_tiny_*`` builds a random-init model of the real architecture with its
real processor, saves both with ``save_pretrained`` and returns the directory, so
code under test goes through the same ``from_pretrained`` path as a real checkpoint.
Nothing is downloaded.
"""

from ._generative import (
    GENERATIVE_FAMILIES,
    make_tiny_blip2,
    make_tiny_idefics3,
    make_tiny_instructblip,
    make_tiny_llava,
    make_tiny_llava_next,
    make_tiny_paligemma,
    make_tiny_qwen2_5_vl,
    make_tiny_qwen2_vl,
    make_tiny_qwen3_vl,
    make_tiny_smolvlm,
)
from ._images import random_images
from ._tokenizer import make_tokenizer
from ._vision import make_tiny_clip, make_tiny_siglip, make_tiny_siglip2, make_tiny_vit

__all__ = [
    "GENERATIVE_FAMILIES",
    "make_tiny_blip2",
    "make_tiny_clip",
    "make_tiny_idefics3",
    "make_tiny_instructblip",
    "make_tiny_llava",
    "make_tiny_llava_next",
    "make_tiny_paligemma",
    "make_tiny_qwen2_5_vl",
    "make_tiny_qwen2_vl",
    "make_tiny_qwen3_vl",
    "make_tiny_siglip",
    "make_tiny_siglip2",
    "make_tiny_smolvlm",
    "make_tiny_vit",
    "make_tokenizer",
    "random_images",
]
