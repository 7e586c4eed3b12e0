"""The tiny GIT and Fuyu checkpoints: models that put the image in front of
the prompt themselves.

Same recipe as :mod:`skvlm.testing._families`: the real architecture at toy
size, the real processor class with an offline word-level tokenizer.

- GIT: a CLIP-like tower, a visual projection, and a BERT-like decoder whose
  sequence is the image's projected tokens, then the text (no image token in
  ``input_ids``). Its tokenizer frames a text as ``[CLS] ... [SEP]``, as
  BERT's does; the model's BOS is ``[CLS]``.
- Fuyu: no tower; each 8 x 8 px patch is one linear embedding, written at the
  ``|SPEAKER|`` positions that ``FuyuProcessor`` puts in front of the prompt
  (one row of patches per line, each line closed by ``|NEWLINE|``, then
  ``<s>``). Fuyu's processor drops the first token of its tokenized image
  placeholders (the real tokenizer's leading ``▁``), so this tokenizer, like
  the real one, starts every text with ``▁``.
"""

from __future__ import annotations

from ._generative import _builder, _merge, _save, _tokenizer

__all__ = ["make_tiny_fuyu", "make_tiny_git"]


@_builder("git")
def make_tiny_git(path, *, seed=0, **overrides):
    """Tiny GIT: CLIP-like tower (32 px images, 8 px patches, 2 blocks, a class
    token: 17 image tokens), a linear + layer-norm visual projection, and a
    3-block post-norm BERT-like decoder with learned text positions."""
    from tokenizers import processors
    from transformers import (
        CLIPImageProcessorPil,
        GitConfig,
        GitForCausalLM,
        GitProcessor,
    )

    tokenizer = _tokenizer(
        [], bos="[CLS]", eos="[SEP]", pad="[PAD]", unk="[UNK]", padding_side="right"
    )
    # BERT's "[CLS] text [SEP]" framing, as GIT's own tokenizer does
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[
            (t, tokenizer.convert_tokens_to_ids(t)) for t in ("[CLS]", "[SEP]")
        ],
    )
    processor = GitProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
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
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(path, GitForCausalLM, GitConfig(**kwargs), processor, seed)


#: What Fuyu's processor writes around the image, its patches' placeholder first.
FUYU_TOKENS = ("|SPEAKER|", "|NEWLINE|", "<s>", "<0x04>")


def _fuyu_tokenizer():
    """A word-level tokenizer that, like Fuyu's, reads ``|SPEAKER|`` and
    ``|NEWLINE|`` as words and starts every text with ``▁``."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = _tokenizer(["<s>", "<0x04>"], eos="|ENDOFTEXT|", pad="<pad>", unk="<unk>")
    vocab = words.get_vocab()
    for token in ("▁", "|SPEAKER|", "|NEWLINE|"):
        vocab.setdefault(token, len(vocab))
    from tokenizers import Tokenizer, models

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Prepend("▁")
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(
                Regex(r"\|SPEAKER\||\|NEWLINE\||▁|\w+|[^\w▁]"), behavior="isolated"
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="|ENDOFTEXT|",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        additional_special_tokens=["<s>", "<0x04>"],
    )


@_builder("fuyu")
def make_tiny_fuyu(path, *, seed=0, **overrides):
    """Tiny Fuyu: 8 x 8 px patches of images fitted inside 32 x 48 px, one
    linear patch embedding (no tower), and a 3-block Persimmon decoder (partial
    rotary positions, query/key layer norms)."""
    from transformers import (
        FuyuConfig,
        FuyuForCausalLM,
        FuyuImageProcessorPil,
        FuyuProcessor,
    )

    tokenizer = _fuyu_tokenizer()
    processor = FuyuProcessor(
        image_processor=FuyuImageProcessorPil(
            size={"height": 32, "width": 48}, patch_size={"height": 8, "width": 8}
        ),
        tokenizer=tokenizer,
    )
    kwargs = _merge(
        dict(
            text_config=dict(
                model_type="persimmon",
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=512,
                qk_layernorm=True,
                partial_rotary_factor=0.5,
                hidden_act="relu2",
                bos_token_id=tokenizer.convert_tokens_to_ids("<s>"),
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
            image_size=32,
            patch_size=8,
            num_channels=3,
            image_token_id=processor.image_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        overrides,
    )
    return _save(path, FuyuForCausalLM, FuyuConfig(**kwargs), processor, seed)
