"""The prompt a generative family's language model sees, written once for all.

LLaVA, LLaVA-NeXT, Qwen2/2.5/3-VL, Idefics3, SmolVLM and the generic fallback
format a question the same way: the processor's chat template with one image
and the question as the user turn, or the family's ``fallback_format`` when the
checkpoint ships no template; a prompt that already holds the image placeholder
is used as is.
"""

from __future__ import annotations

import re

#: The paper's extraction prompt (Zhang et al., 2024), used when ``prompt=None``.
DEFAULT_PROMPT = "What type of object is in this photo?"


class ChatPromptMixin:
    """``format_prompt`` and the one-placeholder check for chat-template families.

    Subclasses set ``image_token`` (the placeholder the processor expands) and
    ``fallback_format`` (a template with ``{prompt}`` and optionally ``{image}``).
    """

    image_token = "<image>"
    fallback_format = "{prompt}"
    #: Whether a formatted prompt holds the image placeholder once. False for
    #: the families whose processor puts the image in front of the prompt
    #: itself (:func:`image_first_prompt`: Florence-2, Kosmos-2, GIT, Fuyu).
    placeholder_in_prompt = True

    def format_prompt(self, prompt):
        """The text the model sees for ``prompt``; one with the placeholder is used as is.

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_llava
        >>> adapter = load_adapter(make_tiny_llava(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("What is it?")
        'USER: <image>\\nWhat is it? ASSISTANT:'
        """
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        if self.image_token in prompt:
            return prompt
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}, {"type": "text", "text": prompt}]
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}],
                add_generation_prompt=True,
                tokenize=False,
            )
        return self.fallback_format.format(image=self.image_token, prompt=prompt)

    def format_prompts(self, prompts):
        """Formatted prompts of a batch, each with exactly one image placeholder
        (where ``placeholder_in_prompt``)."""
        texts = [self.format_prompt(p) for p in prompts]
        if not self.placeholder_in_prompt:
            return texts
        for i, text in enumerate(texts):
            count = text.count(self.image_token)
            if count != 1:
                raise ValueError(
                    f"The prompt of batch item {i} holds {count} image placeholders "
                    f"{self.image_token!r}: {text!r}. skvlm sends one image per row; "
                    "write the placeholder once, or leave it out and skvlm inserts it."
                )
        return texts


def special_token_ids(tokenizer, pattern=None):
    """Ids left out of ``text_mean``: special tokens, and added tokens matching ``pattern``."""
    ids = set(tokenizer.all_special_ids)
    for token_id, token in tokenizer.added_tokens_decoder.items():
        if token.special or (
            pattern is not None and re.fullmatch(pattern, token.content)
        ):
            ids.add(token_id)
    return ids


def text_ids(tokenizer, text):
    """Ids of plain ``text``, without special tokens.

    A layout tokenizer (UDOP's, LayoutLM's: its ``__call__`` takes word
    ``boxes``) reads ``text`` as words with boxes; plain text, such as an
    answer for the decoder, goes through its ``text_target``.

    Examples
    --------
    >>> from skvlm.models._chat import text_ids
    >>> from skvlm.testing import make_tokenizer
    >>> tokenizer = make_tokenizer()
    >>> text_ids(tokenizer, "a cat") == tokenizer("a cat", add_special_tokens=False)[
    ...     "input_ids"
    ... ]
    True
    """
    import inspect

    if "boxes" in inspect.signature(tokenizer.__call__).parameters:
        return list(tokenizer(text_target=text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def image_first_prompt(prompt, image_token, name):
    """``prompt`` for a processor that puts the image before it (Florence-2,
    Kosmos-2): ``None`` is the default prompt, a leading ``image_token`` is
    dropped, one anywhere else is an error naming the model ``name``.

    Examples
    --------
    >>> from skvlm.models._chat import image_first_prompt
    >>> image_first_prompt("<image>What is it?", "<image>", "Florence-2")
    'What is it?'
    """
    prompt = DEFAULT_PROMPT if prompt is None else prompt
    if image_token not in prompt:
        return prompt
    if not prompt.startswith(image_token) or prompt.count(image_token) > 1:
        raise ValueError(
            f"prompt {prompt!r} puts {image_token!r} after some text; "
            f"{name} always places the image before the prompt, so the "
            "placeholder may only open it. Remove it or move it to the start."
        )
    return prompt[len(image_token) :]
