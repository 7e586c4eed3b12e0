"""Text helpers of the generative classifier: answer matching and closed-set prompts.

Pure functions, no model: they are tested on crafted strings.
"""

from __future__ import annotations

import re

#: Appended to the prompt by ``strategy="closed_set"`` when the prompt has no
#: ``{candidates}`` field (the paper's wording).
CLOSED_SET_SUFFIX = ' Choose one from "{candidates}".'


def match_class_name(answer, names):
    """The index of the class name the answer mentions first, or -1.

    Matching is case-insensitive and respects word boundaries ("cat" is not found
    in "category"); whitespace inside a name matches any run of whitespace. When
    several names occur, the earliest occurrence wins; names starting at the same
    position go to the longest ("sea lion" over "sea").

    Parameters
    ----------
    answer : str
        Generated text.
    names : sequence of str
        Class names.

    Returns
    -------
    index : int
        Position of the matched name in ``names``, -1 when none occurs.

    Examples
    --------
    >>> from skvlm.classifiers._generative_text import match_class_name
    >>> match_class_name("The photo features a Sea Lion and a lion.", ["lion", "sea lion"])
    1
    >>> match_class_name("A category of objects.", ["cat"])
    -1
    """
    text = answer.lower()
    best = (len(text) + 1, 0, -1)  # (start, -length, index): smallest wins
    for index, name in enumerate(names):
        words = name.lower().split()
        if not words:
            continue
        pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)"
        found = re.search(pattern, text)
        if found is not None:
            best = min(best, (found.start(), -(found.end() - found.start()), index))
    return best[2]


def closed_set_prompt(prompt, names):
    """The closed-set question: ``prompt`` with the candidate list filled in.

    ``prompt`` may hold a ``{candidates}`` field; otherwise
    ``' Choose one from "{candidates}".'`` is appended. Candidates are joined
    with ", " in the order given.

    Parameters
    ----------
    prompt : str
        The question.
    names : sequence of str
        The candidates, in the order to show them.

    Returns
    -------
    text : str

    Examples
    --------
    >>> from skvlm.classifiers._generative_text import closed_set_prompt
    >>> closed_set_prompt("What type of object is in this photo?", ["cat", "dog"])
    'What type of object is in this photo? Choose one from "cat, dog".'
    """
    candidates = ", ".join(names)
    if "{candidates}" in prompt:
        return prompt.replace("{candidates}", candidates)
    return prompt + CLOSED_SET_SUFFIX.format(candidates=candidates)
