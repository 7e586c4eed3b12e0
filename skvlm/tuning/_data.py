"""The tuner's data: answers from templates, instruction data, the validation split."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from sklearn.model_selection import train_test_split

from .._inputs import as_items, image_key, load_image, pad_to_square
from ..models import DEFAULT_PROMPT
from ._batches import answer_ids
from ._loop import Example


def answer_prefix(template):
    """The text before the class name in ``template`` (what scoring continues from).

    Examples
    --------
    >>> from skvlm.tuning._data import answer_prefix
    >>> answer_prefix("The photo features a {}.")
    'The photo features a'
    >>> answer_prefix("{}")
    ''
    """
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            f"answer_template={template!r} must hold exactly one '{{}}', where the "
            "class name goes, e.g. 'The photo features a {}.'."
        )
    return template.split("{}")[0].rstrip()


def template_prompt(template, prompt):
    """The question put into ``template`` (a text with ``{prompt}``), or the
    question itself when there is no template (the family's chat template then
    formats it).

    Examples
    --------
    >>> from skvlm.tuning._data import template_prompt
    >>> template_prompt("USER: <image>\\n{prompt} ASSISTANT:", "What is it?")
    'USER: <image>\\nWhat is it? ASSISTANT:'
    >>> template_prompt(None, None) is None
    True
    """
    if template is None:
        return prompt
    if "{prompt}" not in template:
        raise ValueError(
            f"prompt_template {template!r} has no {{prompt}} field for the "
            "question; e.g. 'USER: <image>\\n{prompt} ASSISTANT:'."
        )
    return template.replace("{prompt}", DEFAULT_PROMPT if prompt is None else prompt)


def image_mean(adapter):
    """The image processor's mean colour (what ``image_aspect="pad"`` pads with)."""
    processor = getattr(adapter.processor, "image_processor", None)
    mean = getattr(processor, "image_mean", None)
    return (0, 0, 0) if mean is None else tuple(float(m) for m in mean)


def padded(item, index, fill):
    """Image ``item`` decoded and padded to a square with ``fill``."""
    return pad_to_square(load_image(item, index), fill)


def instruction_rows(data):
    """``(items, prompts, answers)`` of the ``instruction_data`` parameter.

    Parameters
    ----------
    data : DataFrame or sequence
        A DataFrame (pandas or polars) or ``datasets.Dataset`` with ``image``,
        ``prompt`` and ``answer`` columns, or a sequence of ``(image, prompt,
        answer)`` triples.

    Returns
    -------
    items : list
    prompts, answers : list of str
    """
    columns = getattr(data, "columns", None) or getattr(data, "column_names", None)
    if columns is not None:
        missing = [c for c in ("image", "prompt", "answer") if c not in list(columns)]
        if missing:
            raise ValueError(
                f"instruction_data lacks the columns {missing}; it needs 'image', "
                "'prompt' and 'answer' columns."
            )
        if hasattr(data, "to_pandas") and not hasattr(data, "iloc"):
            data = data.to_pandas()
        items, prompts = as_items(data)
        answers = list(data["answer"])
    else:
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, (tuple, list)) or len(row) != 3:
                raise ValueError(
                    f"instruction_data[{i}] is {type(row).__name__}, not an "
                    "(image, prompt, answer) triple; give triples or a DataFrame "
                    "with image, prompt and answer columns."
                )
        items = [r[0] for r in rows]
        prompts = [r[1] for r in rows]
        answers = [r[2] for r in rows]
    if not items:
        raise ValueError("instruction_data is empty; pass None to mix nothing in.")
    for name, values in (("prompt", prompts), ("answer", answers)):
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"instruction_data row {i}: the {name} is {value!r}; every row "
                    f"needs a non-empty text {name}."
                )
    return items, list(prompts), list(answers)


def split_validation(y_index, fraction, seed):
    """Train and validation row indices, stratified when every class has 2+ rows."""
    rows = np.arange(len(y_index))
    counts = np.bincount(y_index)
    stratify = y_index if counts[counts > 0].min() >= 2 else None
    n_val = max(1, int(round(fraction * len(rows))))
    if stratify is not None and n_val < len(counts[counts > 0]):
        stratify = None  # fewer validation rows than classes
    if n_val >= len(rows):
        raise ValueError(
            f"validation_fraction={fraction} leaves no training rows out of "
            f"{len(rows)}; lower it or pass more images."
        )
    train, val = train_test_split(
        rows, test_size=n_val, stratify=stratify, random_state=seed
    )
    return np.sort(train), np.sort(val)


def classification_examples(
    adapter,
    items,
    prompts,
    y_index,
    names,
    template,
    objective,
    rows,
    prompt_template=None,
):
    """Examples of the classification rows ``rows``."""
    tokenizer = adapter.processor.tokenizer
    answers = None
    if objective == "generation":
        answers = answer_ids(tokenizer, [template.format(n) for n in names])
    formatted = {}
    out = []
    for i in rows:
        prompt = prompts[i]
        if prompt not in formatted:
            text = template_prompt(prompt_template, prompt)
            formatted[prompt] = adapter.format_prompt(text)
        label = int(y_index[i])
        out.append(
            Example(
                item=items[i],
                index=int(i),
                prompt=formatted[prompt],
                answer=None if answers is None else answers[label],
                label=label if answers is None else -1,
            )
        )
    return out


def instruction_examples(adapter, items, prompts, answers, prompt_template=None):
    """Examples of the instruction rows (always generation rows)."""
    ids = answer_ids(adapter.processor.tokenizer, answers)
    return [
        Example(
            item=item,
            index=i,
            prompt=adapter.format_prompt(template_prompt(prompt_template, p)),
            answer=a,
        )
        for i, (item, p, a) in enumerate(zip(items, prompts, ids, strict=True))
    ]


def data_key(items, prompts, labels):
    """A digest of a data set: image contents, prompts and labels, in order."""
    digest = hashlib.sha1()
    for i, (item, prompt, label) in enumerate(zip(items, prompts, labels, strict=True)):
        record = [image_key(item, i), prompt, str(label)]
        digest.update(json.dumps(record).encode())
    return digest.hexdigest()
