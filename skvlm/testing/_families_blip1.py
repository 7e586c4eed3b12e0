"""Tiny checkpoints of BLIP (v1) and InstructBLIP-Video.

Same recipe as :mod:`skvlm.testing._generative`: the real architecture at toy
size, the real processor class with an offline word-level tokenizer.

- BLIP (``BlipForConditionalGeneration``): a ViT tower and a BERT-style text
  decoder that cross-attends to the tower's last states; its tokenizer frames
  a text as ``[CLS] ... [SEP]``, as BERT's does, and ``[DEC]`` is the
  decoder's BOS (the real checkpoints' layout).
- InstructBLIP-Video (``InstructBlipVideoForConditionalGeneration``): as
  InstructBLIP (ViT tower, instruction-aware Q-Former, Llama LM), its frames
  read by a video processor that transformers ships only with torchvision.
  The builder writes the processor's files without instantiating the video
  processor, so it runs with or without torchvision; loading the processor
  then needs torchvision, as on a user's machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import processors

from ._families_tvonly import _Written
from ._generative import (
    _QFORMER,
    _VISION,
    _builder,
    _llama_text,
    _llama_tokenizer,
    _merge,
    _save,
    _tokenizer,
)

__all__ = ["make_tiny_blip", "make_tiny_instructblipvideo"]


def _bert_tokenizer(specials=(), **kwargs):
    """A word-level tokenizer framing texts as BERT does: ``[CLS] ... [SEP]``."""
    tokenizer = _tokenizer(
        ["[CLS]", "[SEP]", "[MASK]", *specials],
        pad="[PAD]",
        unk="[UNK]",
        padding_side="right",
        **kwargs,
    )
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[
            (t, tokenizer.convert_tokens_to_ids(t)) for t in ("[CLS]", "[SEP]")
        ],
    )
    return tokenizer


@_builder("blip")
def make_tiny_blip(path, *, seed=0, **overrides):
    """Tiny BLIP (v1) captioner: ViT tower (32 px images, 8 px patches, 3
    blocks, a class token) and a 3-block BERT-style text decoder whose blocks
    cross-attend to the tower's last states. ``[DEC]`` is its BOS, ``[SEP]``
    its end of text."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    tokenizer = _bert_tokenizer(["[DEC]"], bos="[DEC]", eos="[SEP]")
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
                bos_token_id=ids("[DEC]"),
                pad_token_id=tokenizer.pad_token_id,
                sep_token_id=ids("[SEP]"),
                eos_token_id=ids("[SEP]"),
            ),
        ),
        overrides,
    )
    return _save(
        path, BlipForConditionalGeneration, BlipConfig(**kwargs), processor, seed
    )


@_builder("instructblipvideo")
def make_tiny_instructblipvideo(path, *, seed=0, **overrides):
    """Tiny InstructBLIP-Video: InstructBLIP's tiny parts (ViT tower, 2-layer
    instruction-aware Q-Former with 4 queries per frame, Llama LM); its
    processor writes 4 x 4 ``<video>`` positions per prompt (4 frames). Needs
    torchvision to load its video processor."""
    from transformers import (
        InstructBlipVideoConfig,
        InstructBlipVideoForConditionalGeneration,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # the processor adds "<video>" to its tokenizer when it has no video_token
    tokenizer = _llama_tokenizer(["<video>"], padding_side="right")
    qformer_tokenizer = _bert_tokenizer()
    tokenizer.save_pretrained(path)
    qformer_tokenizer.save_pretrained(path / "qformer_tokenizer")
    video = {
        "video_processor_type": "InstructBlipVideoVideoProcessor",
        "size": {"height": 32, "width": 32},
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "do_sample_frames": False,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    config = {
        "processor_class": "InstructBlipVideoProcessor",
        "num_query_tokens": 4,
        "video_processor": video,
    }
    (path / "processor_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n"
    )
    kwargs = _merge(
        dict(
            vision_config=dict(
                _VISION,
                model_type="instructblipvideo_vision_model",
                initializer_range=0.02,
            ),
            qformer_config=dict(
                _QFORMER,
                vocab_size=len(qformer_tokenizer),
                pad_token_id=qformer_tokenizer.pad_token_id,
            ),
            text_config=_llama_text(tokenizer),
            num_query_tokens=4,
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        ),
        overrides,
    )
    return _save(
        path,
        InstructBlipVideoForConditionalGeneration,
        InstructBlipVideoConfig(**kwargs),
        _Written(),
        seed,
    )
