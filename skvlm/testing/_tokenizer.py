"""A word-level tokenizer trained offline in milliseconds, for tiny test models."""

from __future__ import annotations

from collections.abc import Iterable

# Words the tiny models' prompts, class names and captions use, so that they tokenize
# to real ids rather than to the unknown token.
BASE_WORDS = (
    "a an the of in is this that what which type object photo picture image digit "
    "number choose one from answer features assistant user system describe class "
    "zero one two three four five six seven eight nine cat dog car bird flower plane "
    "ship truck frog horse deer tree red green blue question yes no and or it with "
    "on to for . , ? ! : ; \" ' ( ) - _ / 0 1 2 3 4 5 6 7 8 9"
).split()


def make_tokenizer(
    special_tokens: Iterable[str] = (),
    *,
    extra_words: Iterable[str] = (),
    bos_token: str | None = "<s>",
    eos_token: str | None = "</s>",
    pad_token: str = "<pad>",
    unk_token: str = "<unk>",
    model_max_length: int = 512,
    padding_side: str = "right",
):
    """Build a word-level fast tokenizer without any download.

    The vocabulary holds the special tokens, the words of ``BASE_WORDS`` and
    ``extra_words``. Words are split on whitespace and punctuation, so any
    family's chat template renders into known ids.

    Parameters
    ----------
    special_tokens : iterable of str, default=()
        Extra special tokens such as ``"<image>"`` or ``"<|image_pad|>"``. They are
        never split and are registered as additional special tokens.
    extra_words : iterable of str, default=()
        More words for the vocabulary (class names, caption words).
    bos_token, eos_token, pad_token, unk_token : str or None
        The usual special tokens; ``None`` leaves one out.
    model_max_length : int, default=512
        Stored on the tokenizer.
    padding_side : {"right", "left"}, default="right"
        Stored on the tokenizer.

    Returns
    -------
    tokenizer : transformers.PreTrainedTokenizerFast

    Examples
    --------
    >>> from skvlm.testing import make_tokenizer
    >>> tok = make_tokenizer(["<image>"])
    >>> tok.convert_ids_to_tokens(tok("<image> a photo of a cat")["input_ids"])
    ['<image>', 'a', 'photo', 'of', 'a', 'cat']
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    named = [t for t in (pad_token, unk_token, bos_token, eos_token) if t is not None]
    specials = list(dict.fromkeys([*named, *special_tokens]))
    words = list(dict.fromkeys([*BASE_WORDS, *extra_words]))
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials, *words]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    extra_specials = [t for t in specials if t not in named]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=unk_token,
        model_max_length=model_max_length,
        padding_side=padding_side,
        additional_special_tokens=extra_specials or None,
    )
    return tokenizer


def with_ends(tokenizer):
    """Make ``tokenizer`` put its BOS and EOS tokens around each text.

    CLIP's tokenizer does so, and CLIP's text tower pools at the EOS token: a
    tokenizer that adds no EOS makes the tower pool the first token, the same
    for every text under causal attention.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerFast
        A tokenizer from :func:`make_tokenizer` with a BOS and an EOS token.

    Returns
    -------
    tokenizer : transformers.PreTrainedTokenizerFast
        The same tokenizer, changed in place.

    Examples
    --------
    >>> from skvlm.testing._tokenizer import make_tokenizer, with_ends
    >>> tok = with_ends(make_tokenizer(bos_token="<|startoftext|>",
    ...                                eos_token="<|endoftext|>"))
    >>> tok.convert_ids_to_tokens(tok("a cat")["input_ids"])
    ['<|startoftext|>', 'a', 'cat', '<|endoftext|>']
    """
    from tokenizers.processors import TemplateProcessing

    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)],
    )
    return tokenizer
