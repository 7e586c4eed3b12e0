"""Count the sentences of a corpus that name each class."""

import re
from collections import Counter
from functools import lru_cache

import numpy as np
import pandas as pd

from .._sklearn_compat import StrOptions, validate_params

# A word token is a maximal run of letters and digits: punctuation, spaces,
# hyphens, apostrophes and underscores all separate words.
_WORD = re.compile(r"[^\W_]+")
# A sentence ends at ., ! or ? followed by white space, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|[\r\n]+")
TOKENIZERS = ("nltk", "words")


@lru_cache(maxsize=1)
def _nltk_tokenizer():
    try:
        from nltk.tokenize import NLTKWordTokenizer
    except ImportError as exc:
        raise ImportError(
            "tokenizer='nltk' (the paper's tokenisation) needs nltk: pip install nltk "
            "(or pip install 'skvlm[analysis]'), or pass tokenizer='words'."
        ) from exc
    return NLTKWordTokenizer().tokenize


def _splitter(tokenizer):
    if tokenizer == "words":
        return _WORD.findall
    if tokenizer == "nltk":
        return _nltk_tokenizer()
    raise ValueError(f"tokenizer must be one of {TOKENIZERS}; got {tokenizer!r}.")


@validate_params(
    {
        "text": [str],
        "lowercase": ["boolean"],
        "tokenizer": [StrOptions({"nltk", "words"})],
    },
    prefer_skip_nested_validation=True,
)
def tokenize(text, *, lowercase=True, tokenizer="nltk"):
    """Split a text into the word tokens ``class_frequency`` matches on.

    ``tokenizer="nltk"`` is the paper's tokenisation
    (``data_analysis/tokenize.ipynb``: ``nltk.word_tokenize``): nltk's
    Treebank-style word tokenizer, which keeps hyphenated words whole
    ("tree-frog") and splits off punctuation and clitics ("cat's" -> "cat",
    "'s"). It is ``nltk.word_tokenize(text, preserve_line=True)``, i.e.
    ``word_tokenize`` on one sentence, and needs no downloaded nltk data.
    ``tokenizer="words"`` takes maximal runs of letters and digits (any
    script): spaces, punctuation, hyphens, apostrophes and underscores all
    separate words, so "tree-frog" becomes "tree", "frog"; it is 30 or more
    times faster.

    Parameters
    ----------
    text : str
        The text to split (one sentence for ``"nltk"``: it splits off only the
        text's final period).
    lowercase : bool, default=True
        Lower-case the text first.
    tokenizer : {"nltk", "words"}, default="nltk"

    Returns
    -------
    tokens : list of str

    Examples
    --------
    >>> from skvlm.analysis import tokenize
    >>> tokenize("A tree-frog's Great_White shark, 2 cats!")
    ['a', 'tree-frog', "'s", 'great_white', 'shark', ',', '2', 'cats', '!']
    >>> tokenize("A tree-frog's Great_White shark, 2 cats!", tokenizer="words")
    ['a', 'tree', 'frog', 's', 'great', 'white', 'shark', '2', 'cats']
    """
    if lowercase:
        text = text.lower()
    return _splitter(tokenizer)(text)


@validate_params(
    {
        "corpus": "no_validation",  # any iterable of str, read once
        "class_names": "no_validation",  # checked item by item, naming the bad one
        "lowercase": ["boolean"],
        "split_sentences": ["boolean"],
        "tokenizer": [StrOptions({"nltk", "words"})],
    },
    prefer_skip_nested_validation=True,
)
def class_frequency(
    corpus, class_names, *, lowercase=True, split_sentences=False, tokenizer="nltk"
):
    """Count, for each class name, the sentences of a corpus that contain it.

    A sentence contains a class name when the name's tokens occur in the
    sentence's tokens as a contiguous sequence (see ``tokenize``): "cat" does
    not match "category" or "cats"; "tree frog" matches "a tree frog sat" but
    not "a frog in a tree", nor, with the paper's nltk tokens, "a tree-frog
    sat" (with ``tokenizer="words"`` it does). Each sentence counts at most
    once per class, however often it names the class. This is the count of
    the paper's ``data_analysis/tokenize.ipynb``, which the paper pairs with
    per-class accuracy; it counts LLaVA's pretraining captions and its
    instruction data separately and adds the two
    (``data_analysis/correlation.ipynb``): pass both corpora, e.g.
    ``itertools.chain(pretraining, instructions)``.

    The corpus is read once: the class names are indexed by their first token,
    so the cost grows with the corpus' token count and hardly with the number
    of classes. nltk's tokenizer dominates the cost (tens to hundreds of
    microseconds a sentence); ``tokenizer="words"`` counts a million short
    sentences in seconds.

    Parameters
    ----------
    corpus : iterable of str
        The sentences (a list, a pandas Series, a generator reading a file line
        by line, ...). With ``split_sentences=True``, documents that are split
        into sentences first.
    class_names : sequence of str
        The class names, e.g. ``["tench", "goldfish", "great white shark"]``.
        Duplicated names (ImageNet's list has two "crane") get the same count.
    lowercase : bool, default=True
        Match case-insensitively (both sides lower-cased, as the paper does).
    split_sentences : bool, default=False
        Split each item of ``corpus`` into sentences: a sentence ends at ".", "!"
        or "?" followed by white space, or at a line break. Abbreviations such
        as "e.g. " therefore end a sentence too; split the corpus yourself when
        that matters (the paper's sentences came from its own preprocessing,
        ``tokenized_sentences_*.json``, which its repository does not include;
        ``nltk.sent_tokenize`` is the likely splitter and needs nltk's punkt
        data).
    tokenizer : {"nltk", "words"}, default="nltk"
        How sentences and names are split into tokens (see ``tokenize``):
        ``"nltk"`` is the paper's.

    Returns
    -------
    counts : pandas Series of int
        Indexed by class name (in the given order), named ``"n_sentences"``;
        ``counts.attrs["corpus_sentences"]`` holds the number of sentences read.

    Examples
    --------
    >>> from skvlm.analysis import class_frequency
    >>> corpus = ["A tree frog sat on a log.", "The cat's category is feline.",
    ...           "Cats chase a cat; the cat wins.", "A frog in a tree.",
    ...           "A tree-frog sat."]
    >>> class_frequency(corpus, ["cat", "tree frog", "frog", "dog"])
    class_name
    cat          2
    tree frog    1
    frog         2
    dog          0
    Name: n_sentences, dtype: int64
    >>> class_frequency(corpus, ["tree frog"], tokenizer="words").tolist()
    [2]
    >>> counts = class_frequency(["A frog. A tree frog!"], ["frog"],
    ...                          split_sentences=True)
    >>> int(counts["frog"]), counts.attrs["corpus_sentences"]
    (2, 2)
    """
    split = _splitter(tokenizer)
    names, keys = _class_keys(class_names, lowercase, tokenizer)
    single = {key[0] for key in keys if len(key) == 1}
    multi = {}  # first token -> multi-token names starting with it
    for key in keys:
        if len(key) > 1:
            multi.setdefault(key[0], set()).add(key)
    multi = {first: sorted(group) for first, group in multi.items()}
    first_tokens = frozenset(multi)
    single_hits, multi_hits = Counter(), Counter()
    n_sentences = 0
    for sentence in _sentences(corpus, split_sentences):
        n_sentences += 1
        tokens = split(sentence.lower() if lowercase else sentence)
        # A set intersection finds the one-word names in C; a sentence only
        # pays for multi-word matching when it holds a multi-word name's start.
        single_hits.update(single.intersection(tokens))
        if first_tokens.isdisjoint(tokens):
            continue
        found = set()
        for i, token in enumerate(tokens):
            for key in multi.get(token, ()):
                if tuple(tokens[i : i + len(key)]) == key:
                    found.add(key)
        multi_hits.update(found)
    counts = [single_hits[key[0]] if len(key) == 1 else multi_hits[key] for key in keys]
    series = pd.Series(
        np.asarray(counts, dtype=np.int64),
        index=pd.Index(names, name="class_name"),
        name="n_sentences",
    )
    series.attrs["corpus_sentences"] = n_sentences
    return series


def _class_keys(class_names, lowercase, tokenizer):
    if isinstance(class_names, str):
        raise TypeError(
            f"class_names must be a sequence of strings, not one string "
            f"({class_names!r}); pass [{class_names!r}] for a single class."
        )
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty; pass at least one class name.")
    keys, empty = [], []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(
                f"class_names[{i}] is {type(name).__name__} "
                f"{name!r}, not a string; convert the names with str()."
            )
        key = tuple(tokenize(name, lowercase=lowercase, tokenizer=tokenizer))
        if not key:
            empty.append(f"[{i}] {name!r}")
        keys.append(key)
    if empty:
        raise ValueError(
            f"class name(s) {', '.join(empty)} hold no token (tokenizer="
            f"{tokenizer!r}) and can never match a sentence; fix or drop them."
        )
    return names, keys


def _sentences(corpus, split):
    if isinstance(corpus, str):
        raise TypeError(
            "corpus is one string; pass an iterable of sentences, or [text] with "
            "split_sentences=True to split one document into sentences."
        )
    for i, item in enumerate(corpus):
        if not isinstance(item, str):
            raise TypeError(
                f"corpus item {i} is {type(item).__name__} {item!r}, not a string; "
                "drop missing entries (e.g. series.dropna()) or convert them."
            )
        if split:
            for sentence in _SENTENCE_END.split(item):
                if sentence.strip():
                    yield sentence
        else:
            yield item
