"""Prompt template sets shipped with skvlm, and each class's prompts (templates
filled with its name, plus its own descriptions)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

__all__ = ["TEMPLATE_SETS", "class_prompts", "get_templates"]

#: Names of the shipped template sets, for ``templates="<name>"``.
TEMPLATE_SETS = ("openai_imagenet",)


def get_templates(name):
    """The templates of a shipped set, each with one ``{}`` for the class name.

    Parameters
    ----------
    name : {"openai_imagenet"}
        ``openai_imagenet``: the 80 templates of CLIP's ImageNet zero-shot
        evaluation (Radford et al. 2021), copied verbatim from the CLIP
        repository's ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from skvlm.classifiers import get_templates
    >>> templates = get_templates("openai_imagenet")
    >>> len(templates), templates[0]
    (80, 'a bad photo of a {}.')
    """
    if name not in TEMPLATE_SETS:
        raise ValueError(
            f"{name!r} names no shipped template set (and has no '{{}}' for the "
            f"class name, so it is no template either); the sets are "
            f"{', '.join(map(repr, TEMPLATE_SETS))}."
        )
    text = (
        resources.files("skvlm")
        .joinpath(f"_data/templates/{name}.json")
        .read_text(encoding="utf-8")
    )
    return list(json.loads(text)["templates"])


def resolve_templates(templates):
    """A list of templates from a set name, one template, or a sequence."""
    if isinstance(templates, str):
        templates = [templates] if "{}" in templates else get_templates(templates)
    templates = list(templates)
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"template {template!r} must be a string with exactly one '{{}}' for "
                f"the class name (or the name of a shipped set: {TEMPLATE_SETS})."
            )
    return templates


def class_prompts(templates, names, classes, class_descriptions=None):
    """Each class's prompts: the templates filled with its name, then its descriptions.

    Parameters
    ----------
    templates : str or sequence of str
        As ``CLIPZeroShotClassifier``'s ``templates``.
    names : list of str
        The name of each class.
    classes : ndarray
        The labels.
    class_descriptions : mapping, default=None
        ``{label or name: [sentence, ...]}``: whole sentences describing a class
        (CuPL, Pratt et al. 2023), used as they are.

    Returns
    -------
    list of list of str

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.classifiers._templates import class_prompts
    >>> class_prompts(["a {}."], ["cat", "dog"], np.array([0, 1]),
    ...               {"cat": ["a small furry pet."]})
    [['a cat.', 'a small furry pet.'], ['a dog.']]
    """
    templates = resolve_templates(templates)
    descriptions = {} if class_descriptions is None else class_descriptions
    if not isinstance(descriptions, Mapping):
        raise TypeError(
            "class_descriptions must be a dict {class label or name: [sentences]}, "
            f"got {type(descriptions).__name__}."
        )
    keys = {k.item() if hasattr(k, "item") else k for k in classes} | set(names)
    unknown = [k for k in descriptions if k not in keys]
    if unknown:
        raise ValueError(
            f"class_descriptions has keys {unknown[:10]} that are neither a label of "
            f"y nor a class name ({sorted(map(str, keys))[:10]}...); key each list by "
            "the class's label or name."
        )
    prompts = []
    for label, name in zip(classes, names, strict=True):
        label = label.item() if hasattr(label, "item") else label
        extra = descriptions.get(label, descriptions.get(name, []))
        if isinstance(extra, str):
            extra = [extra]
        extra = list(extra)
        if not all(isinstance(d, str) and d.strip() for d in extra):
            raise ValueError(
                f"class_descriptions[{label!r}] must be a list of non-empty strings."
            )
        texts = [t.format(name) for t in templates] + extra
        if not texts:
            raise ValueError(
                f"Class {label!r} ({name!r}) has no prompt: templates is empty and "
                "class_descriptions has nothing for it. Give it descriptions or "
                "use templates."
            )
        prompts.append(texts)
    return prompts
