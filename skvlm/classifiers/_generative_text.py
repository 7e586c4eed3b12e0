"""Text helpers of the generative classifier: answer matching, candidates, prompts.

Pure functions, no model: they are tested on crafted strings. Each follows a file of
the paper's code (GitHub yuhui-zh15/VLMClassifier), named in its docstring.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.utils import check_random_state

from .._sklearn_compat import StrOptions, validate_params

#: Appended to the prompt by ``strategy="closed_set"`` when the prompt has no
#: ``{candidates}`` field (the paper's wording, ``main_results/main.py``).
CLOSED_SET_SUFFIX = ' Choose one from "{candidates}".'

#: The paper's prompt templates (``main_results/main.py``,
#: ``feature_analysis/extract_feature.py``), by family. ``None``: the family's own
#: format already is the paper's (BLIP-2: ``"Question: {prompt} Answer:"``, as
#: skvlm's BLIP-2 adapter formats it; InstructBLIP's adapter passes the bare
#: instruction, the paper wraps it the same way).
PAPER_PROMPT_TEMPLATES = {
    "llava": "USER: <image>\n{prompt}\nASSISTANT:",
    "blip-2": None,
    "instructblip": "Question: {prompt} Answer:",
}

NAME_MATCHES = ("substring", "word")


@validate_params(
    {
        "answer": [str],
        "names": ["array-like"],
        "rule": [StrOptions(set(NAME_MATCHES))],
    },
    prefer_skip_nested_validation=True,
)
def match_class_name(answer, names, rule="substring"):
    """The index of the class name the answer mentions first, or -1.

    Matching is case-insensitive. With ``rule="substring"`` (the paper's test,
    ``main_results/eval.ipynb``: ``label.lower() in pred.lower()``) a name is
    found anywhere, also inside a longer word ("cat" in "category"); with
    ``rule="word"`` only at word boundaries. Whitespace inside a name matches
    any run of whitespace. When several names occur, the earliest occurrence
    wins; names starting at the same position go to the longest ("sea lion"
    over "sea").

    Parameters
    ----------
    answer : str
        Generated text.
    names : sequence of str
        Class names.
    rule : {"substring", "word"}, default="substring"
        Where a name may occur (see above).

    Returns
    -------
    index : int
        Position of the matched name in ``names``, -1 when none occurs.

    Examples
    --------
    >>> from skvlm.classifiers import match_class_name
    >>> match_class_name("The photo features a Sea Lion and a lion.", ["lion", "sea lion"])
    1
    >>> match_class_name("A category of objects.", ["cat"])
    0
    >>> match_class_name("A category of objects.", ["cat"], rule="word")
    -1
    """
    if rule not in NAME_MATCHES:
        raise ValueError(f"rule must be one of {NAME_MATCHES}; got {rule!r}.")
    text = answer.lower()
    best = (len(text) + 1, 0, -1)  # (start, -length, index): smallest wins
    for index, name in enumerate(names):
        words = name.lower().split()
        if not words:
            continue
        pattern = r"\s+".join(map(re.escape, words))
        if rule == "word":
            pattern = r"(?<!\w)" + pattern + r"(?!\w)"
        found = re.search(pattern, text)
        if found is not None:
            best = min(best, (found.start(), -(found.end() - found.start()), index))
    return best[2]


@validate_params(
    {
        "answers": ["array-like"],
        "label_names": ["array-like"],
        "rule": [StrOptions({"substring", "exact"})],
    },
    prefer_skip_nested_validation=True,
)
def answer_is_correct(answers, label_names, rule="substring"):
    """The paper's correctness of generated answers, one boolean per answer.

    ``rule="substring"`` is the test of the paper's open-ended and closed-set
    tables (``main_results/eval.ipynb``, ``data_analysis/correlation.ipynb``):
    an answer is right when the lower-cased true class name occurs in the
    lower-cased answer, anywhere; an answer naming no class, or naming the
    wrong one, is wrong; an answer naming several classes is right for each
    of them. ``rule="exact"`` is the test of the fine-tuned models
    (``training_analysis/llava/eval_classification.ipynb``): the lower-cased
    answer equals the lower-cased name.

    Parameters
    ----------
    answers : sequence of str
        Generated answers (e.g. ``VLMGenerativeClassifier.generate(X)``).
    label_names : sequence of str
        The true class name of each answer.
    rule : {"substring", "exact"}, default="substring"

    Returns
    -------
    correct : ndarray of bool, shape (n_answers,)
        Its mean is the paper's accuracy.

    Examples
    --------
    >>> from skvlm.classifiers import answer_is_correct
    >>> answer_is_correct(["The photo features a Cat.", "The photo",
    ...                    "a cat and a dog", "dog"], ["cat", "cat", "dog", "Dog"])
    array([ True, False,  True,  True])
    >>> answer_is_correct(["Dog", "a dog"], ["dog", "dog"], rule="exact")
    array([ True, False])
    """
    answers, label_names = list(answers), list(label_names)
    if len(answers) != len(label_names):
        raise ValueError(
            f"answers has {len(answers)} entries but label_names {len(label_names)}; "
            "give the true class name of every answer."
        )
    if rule not in ("substring", "exact"):
        raise ValueError(f"rule must be 'substring' or 'exact'; got {rule!r}.")
    pairs = zip(answers, label_names, strict=True)
    if rule == "substring":
        hits = [str(n).lower() in a.lower() for a, n in pairs]
    else:
        hits = [str(n).lower() == a.lower() for a, n in pairs]
    return np.asarray(hits, dtype=bool)


def closed_set_prompt(prompt, names):
    """The closed-set question: ``prompt`` with the candidate list filled in.

    ``prompt`` may hold a ``{candidates}`` field; otherwise
    ``' Choose one from "{candidates}".'`` is appended (the paper's wording).
    Candidates are joined with ", " in the order given.

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


def sample_candidates(y, classes, n_candidates, random_state=None):
    """The paper's closed-set candidates: the true class and ``n - 1`` others.

    For each label, ``n_candidates - 1`` other classes are drawn without
    replacement, the true class is added and the list is shuffled, as in
    ``main_results/main.py`` (``random.sample`` of the other classes, then
    ``random.shuffle``), with numpy's generator instead of Python's.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        True labels, each in ``classes``.
    classes : array-like of shape (n_classes,)
    n_candidates : int
        Candidates per image, between 1 and ``n_classes``.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    candidates : list of list
        One list of labels per sample.
    """
    classes = np.asarray(classes)
    if not 1 <= n_candidates <= len(classes):
        raise ValueError(
            f"n_candidates={n_candidates} must be between 1 and the number of "
            f"classes ({len(classes)})."
        )
    rng = check_random_state(random_state)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    out = []
    for position, label in enumerate(np.asarray(y).tolist()):
        if label not in lookup:
            raise ValueError(
                f"y[{position}] = {label!r} is not one of the classes "
                f"{classes.tolist()[:20]}."
            )
        others = np.delete(np.arange(len(classes)), lookup[label])
        chosen = rng.choice(others, n_candidates - 1, replace=False).tolist()
        chosen = [lookup[label], *chosen]
        out.append(classes[rng.permutation(chosen)].tolist())
    return out


def check_no_match(no_match, classes):
    """Refuse a ``no_match`` label that is not a scalar or is one of the classes."""
    if isinstance(no_match, str) and no_match == "probabilistic":
        return
    if np.ndim(no_match) != 0:
        raise ValueError(
            f"no_match must be 'probabilistic' or one label value; got {no_match!r}."
        )
    if any(c == no_match for c in np.asarray(classes).tolist()):
        raise ValueError(
            f"no_match={no_match!r} is one of the classes, so an answer naming no "
            "class would count as that class. Pick a value that is not a label "
            "(e.g. -1 or 'none'), or no_match='probabilistic'."
        )


def resolve_template(template, family, image_token):
    """The prompt template in force (a string with ``{prompt}``) or None.

    ``"paper"`` becomes the paper's template of ``family`` (None where the
    family's own format is the paper's), with the family's image placeholder.
    """
    if template == "paper":
        if family not in PAPER_PROMPT_TEMPLATES:
            raise ValueError(
                f"prompt_template='paper' knows the paper's templates of "
                f"{sorted(PAPER_PROMPT_TEMPLATES)}, not of {family!r}; pass the "
                "template as a string with a {prompt} field."
            )
        template = PAPER_PROMPT_TEMPLATES[family]
        return None if template is None else template.replace("<image>", image_token)
    if template is not None and "{prompt}" not in template:
        raise ValueError(
            f"prompt_template {template!r} has no {{prompt}} field for the "
            "question; e.g. 'USER: <image>\\n{prompt}\\nASSISTANT:'."
        )
    return template


def candidate_names(X, classes, names, n_rows):
    """The closed-set candidate names of each row: every class, or X's ``candidates``.

    A pandas DataFrame ``X`` with a ``candidates`` column gives each row a list
    of labels (in the order to show them, before any shuffling).
    """
    if not (hasattr(X, "columns") and "candidates" in X.columns):
        return [list(names)] * n_rows
    lookup = dict(zip(np.asarray(classes).tolist(), names, strict=True))
    out = []
    for row, labels in enumerate(X["candidates"]):
        labels = list(labels)
        unknown = [c for c in labels if c not in lookup]
        if unknown or not labels:
            problem = (
                f"{unknown[:5]} are not classes seen in fit" if unknown else "empty"
            )
            raise ValueError(
                f"X['candidates'][{row}] = {labels!r}: {problem}. Give each row a "
                "non-empty list of labels, e.g. from clf.sample_candidates(y, n)."
            )
        out.append([lookup[c] for c in labels])
    return out
