"""Tests of skvlm.analysis: class frequency counts and the frequency/accuracy report."""

import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.metrics import recall_score

from skvlm.analysis import (
    class_frequency,
    frequency_accuracy_report,
    per_class_accuracy,
    tokenize,
)

# ---------------------------------------------------------------- class_frequency

SENTENCES = [
    "A tree frog sat on a log.",  # 0
    "The category of this animal is unclear.",  # 1
    "Cats chase a cat; the CAT wins.",  # 2
    "A frog in a tree.",  # 3
    "Look: a tree-frog!",  # 4
    "A great white shark and a white shark.",  # 5
    "My T-shirt shows a Cat's face",  # 6
    "catfish and bobcat",  # 7
    "",  # 8
]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cat", 2),  # 2 (counted once), 6 ("cat's"); not "category",
        # "cats", "catfish", "bobcat"
        ("tree frog", 2),  # 0, 4 (hyphen splits); not 3 ("frog in a tree")
        ("frog", 3),  # 0, 3, 4
        ("tree", 3),  # 0, 3, 4
        ("white shark", 1),  # 5 (twice in it, counted once)
        ("great white shark", 1),  # 5
        ("t-shirt", 1),  # 6
        ("T shirt", 1),  # 6
        ("shark and a white", 1),  # 5
        ("a frog", 1),  # 3 ("a tree frog" is not "a frog")
        ("dog", 0),
        ("category", 1),
        ("Great_White Shark", 1),  # underscores separate words too
    ],
)
def test_hand_counted_matches_words(name, expected):
    counts = class_frequency(SENTENCES, [name], tokenizer="words")
    assert counts.loc[name] == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cat", 2),  # 2 (counted once), 6 ("cat 's"); not "cats", "catfish"
        ("tree frog", 1),  # 0 only: nltk keeps "tree-frog" one token (4)
        ("frog", 2),  # 0, 3
        ("tree", 2),  # 0, 3 ("tree ." : the final period is split off)
        ("tree-frog", 1),  # 4
        ("white shark", 1),  # 5 (twice in it, counted once)
        ("great white shark", 1),  # 5
        ("t-shirt", 1),  # 6
        ("T shirt", 0),  # "t-shirt" is one token
        ("a frog", 1),  # 3
        ("dog", 0),
        ("Great_White Shark", 0),  # "great_white" is one token
    ],
)
def test_hand_counted_matches_nltk(name, expected):
    counts = class_frequency(SENTENCES, [name])  # tokenizer="nltk", the default
    assert counts.loc[name] == expected


def _paper_counts(corpus, names, fixed=True):
    """data_analysis/tokenize.ipynb, transcribed: nltk word tokens of the lower-cased
    name and sentence, and its is_sublist test. ``fixed=False`` keeps the paper's
    is_sublist verbatim, which never matches at a sentence's first or last token
    ("##" + name + "##" against a join with no "##" at its ends)."""
    import nltk

    def word_tokenize(text):
        return nltk.word_tokenize(text, preserve_line=True)  # no punkt data here

    def is_sublist(smaller, larger):
        larger_str = "##".join(larger)
        if fixed:
            larger_str = "##" + larger_str + "##"
        smaller_str = "##".join(smaller)
        return "##" + smaller_str + "##" in larger_str

    sentences = [word_tokenize(s.lower()) for s in corpus]
    classnames = [word_tokenize(n.lower()) for n in names]
    return [sum(is_sublist(c, sent) for sent in sentences) for c in classnames]


def test_nltk_counts_equal_the_papers_notebook():
    rng = np.random.default_rng(0)
    words = np.array(
        ["cat", "dog", "tree", "frog", "red", "fox", "a", "the", "sea", "lion",
         "Sea", "bird", "cat's", "tree-frog", "(", "st.", "bernard"]
    )  # fmt: skip
    corpus = []
    for _ in range(300):
        tokens = rng.choice(words, rng.integers(1, 12))
        seps = rng.choice([" ", ", ", " - ", "  ", "; "], len(tokens))
        corpus.append("".join(t + s for t, s in zip(tokens, seps, strict=True)))
    names = ["cat", "tree frog", "tree-frog", "red fox", "sea lion", "frog",
             "a red fox", "dog dog", "bird cat dog", "lion", "St. Bernard"]  # fmt: skip
    got = class_frequency(corpus, names).tolist()
    assert got == _paper_counts(corpus, names)
    assert sum(got) > 100  # the corpus really names the classes
    # The paper's verbatim is_sublist misses names at a sentence's edges; we count
    # them (a stated difference): strictly fewer counts there.
    verbatim = _paper_counts(corpus, names, fixed=False)
    assert all(v <= g for v, g in zip(verbatim, got, strict=True))
    assert sum(verbatim) < sum(got)
    assert _paper_counts(["cat sat on the mat"], ["cat"], fixed=False) == [0]
    assert class_frequency(["cat sat on the mat"], ["cat"]).tolist() == [1]


def test_result_layout_order_and_duplicates():
    names = ["frog", "cat", "dog", "crane", "crane"]
    counts = class_frequency(SENTENCES, names, tokenizer="words")
    assert counts.index.tolist() == names
    assert counts.index.name == "class_name" and counts.name == "n_sentences"
    assert counts.dtype == np.int64
    assert counts.tolist() == [3, 2, 0, 0, 0]
    assert counts.attrs["corpus_sentences"] == len(SENTENCES)
    assert class_frequency(SENTENCES, names).tolist() == [2, 2, 0, 0, 0]


def test_lowercase_false_is_case_sensitive():
    counts = class_frequency(
        SENTENCES, ["cat", "CAT", "Cat"], lowercase=False, tokenizer="words"
    )
    # "cat" in 2; "CAT" in 2; "Cat" in 6 ("Cats" is another word)
    assert counts.tolist() == [1, 1, 1]


def test_split_sentences():
    docs = ["A cat sat. A dog ran! Then a cat?\nA cat again", "no animals here"]
    counts = class_frequency(docs, ["cat", "dog"], split_sentences=True)
    assert counts.tolist() == [3, 1]
    assert counts.attrs["corpus_sentences"] == 5
    # Without splitting, a document counts once.
    assert class_frequency(docs, ["cat"]).tolist() == [1]


def test_accepts_generators_and_series():
    gen = (s for s in SENTENCES)
    assert class_frequency(gen, ["frog"]).tolist() == [2]
    series = pd.Series(SENTENCES, index=np.arange(100, 100 + len(SENTENCES)))
    assert class_frequency(series, ["frog"], tokenizer="words").tolist() == [3]


def test_matches_count_vectorizer_on_random_corpus():
    """Independent reference: sklearn's binary n-gram counts over the same tokens."""
    rng = np.random.default_rng(0)
    words = np.array(
        [
            "cat",
            "dog",
            "tree",
            "frog",
            "red",
            "fox",
            "a",
            "the",
            "sea",
            "lion",
            "Sea",
            "bird",
        ]
    )
    corpus = []
    for _ in range(400):
        tokens = rng.choice(words, rng.integers(1, 12))
        seps = rng.choice([" ", ", ", "-", "  ", "; "], len(tokens))
        corpus.append("".join(t + s for t, s in zip(tokens, seps, strict=True)))
    names = [
        "cat",
        "tree frog",
        "red fox",
        "sea lion",
        "frog",
        "a red fox",
        "dog dog",
        "bird cat dog",
        "lion",
    ]
    vectorizer = CountVectorizer(
        vocabulary=names,
        ngram_range=(1, 3),
        binary=True,
        token_pattern=r"(?u)[^\W_]+",
        lowercase=True,
    )
    expected = np.asarray(vectorizer.transform(corpus).sum(axis=0)).ravel()
    got = class_frequency(corpus, names, tokenizer="words").to_numpy()
    np.testing.assert_array_equal(got, expected)


def test_tokenize():
    words = tokenize("Tree-frog's BIG_day, 3rd!", tokenizer="words")
    assert words == ["tree", "frog", "s", "big", "day", "3rd"]
    assert tokenize("Éclair Über", lowercase=False, tokenizer="words") == [
        "Éclair",
        "Über",
    ]
    assert tokenize("... --- ", tokenizer="words") == []
    assert tokenize("Tree-frog's BIG_day, 3rd!") == [
        "tree-frog",
        "'s",
        "big_day",
        ",",
        "3rd",
        "!",
    ]
    with pytest.raises(ValueError, match="'tokenizer' parameter .*'nltk'"):
        tokenize("a", tokenizer="spacy")


@pytest.mark.parametrize(
    "corpus, names, error, match",
    [
        ("one long text", ["cat"], TypeError, "corpus is one string"),
        (["ok", None], ["cat"], TypeError, "corpus item 1 is NoneType"),
        (["ok", 3.5], ["cat"], TypeError, "corpus item 1 is float"),
        (["ok"], "cat", TypeError, r"pass \['cat'\]"),
        (["ok"], [], ValueError, "class_names is empty"),
        (["ok"], ["cat", 7], TypeError, r"class_names\[1\] is int"),
        (
            ["ok"],
            ["cat", "!!", "-"],
            ValueError,
            r"\[1\] '!!', \[2\] '-'.*no token \(tokenizer='words'\)",
        ),
    ],
)
def test_class_frequency_errors(corpus, names, error, match):
    with pytest.raises(error, match=match):
        class_frequency(corpus, names, tokenizer="words")
    with pytest.raises(ValueError, match=r"\[1\] ' '.*no token"):
        class_frequency(["ok"], ["cat", " "])


# ---------------------------------------------------------------- per_class_accuracy


def test_per_class_accuracy_equals_recall():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))
    got = per_class_accuracy(y_true, y_pred)
    expected = recall_score(y_true, y_pred, average=None, labels=[0, 1, 2, 3, 4])
    np.testing.assert_allclose(got.to_numpy(), expected)
    assert got.index.tolist() == [0, 1, 2, 3, 4] and got.name == "accuracy"


def test_per_class_accuracy_labels_and_hand_values():
    y_true = ["cat", "cat", "cat", "dog", "eel"]
    y_pred = ["cat", "dog", "cat", "cat", "eel"]
    got = per_class_accuracy(y_true, y_pred, labels=["eel", "cat", "yak", "dog"])
    assert got.index.tolist() == ["eel", "cat", "yak", "dog"]
    np.testing.assert_allclose(got.to_numpy(), [1.0, 2 / 3, np.nan, 0.0])
    with pytest.raises(ValueError, match="same length"):
        per_class_accuracy([1, 2], [1])


# ---------------------------------------------------------------- report

COUNTS = pd.Series(
    {"a": 0, "b": 0, "c": 3, "d": 9, "e": 10, "f": 150, "g": 999, "h": 20000}
)
ACCURACY = pd.Series(
    {"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.4, "e": 0.5, "f": 0.45, "g": 0.8, "h": 0.9}
)


def test_correlations_equal_scipy():
    report = frequency_accuracy_report(COUNTS, ACCURACY)
    spearman = stats.spearmanr(COUNTS.to_numpy(), ACCURACY.to_numpy())
    pearson = stats.pearsonr(np.log10(COUNTS.to_numpy() + 1.0), ACCURACY.to_numpy())
    assert report.spearman == pytest.approx(spearman.statistic, abs=1e-12)
    assert report.spearman_pvalue == pytest.approx(spearman.pvalue, abs=1e-12)
    assert report.pearson == pytest.approx(pearson.statistic, abs=1e-12)
    assert report.pearson_pvalue == pytest.approx(pearson.pvalue, abs=1e-12)
    # the paper's Pearson (data_analysis/correlation.ipynb) is on the raw counts
    raw = stats.pearsonr(COUNTS.to_numpy(), ACCURACY.to_numpy())
    assert report.pearson_raw == pytest.approx(raw.statistic, abs=1e-12)
    assert report.pearson_raw_pvalue == pytest.approx(raw.pvalue, abs=1e-12)
    assert report.pearson_raw != pytest.approx(report.pearson)
    assert "spearman=" in repr(report) and "pearson_raw=" in repr(report)


def test_spearman_hand_computed():
    # ranks of counts 1..5, of accuracy (1, 2, 3, 5, 4): sum d^2 = 2
    report = frequency_accuracy_report([1, 5, 50, 500, 5000], [0.1, 0.2, 0.3, 0.9, 0.8])
    assert report.spearman == pytest.approx(1 - 6 * 2 / (5 * (25 - 1)))


def test_log_bins_hand_computed():
    bins = frequency_accuracy_report(COUNTS, ACCURACY).bins
    assert bins["low"].tolist() == [0, 1, 10, 100, 1000, 10000]
    assert bins["high"].tolist() == [1, 10, 100, 1000, 10000, 100000]
    assert bins["n_classes"].tolist() == [2, 2, 1, 2, 0, 1]
    expected = [0.2, 0.3, 0.5, (0.45 + 0.8) / 2, np.nan, 0.9]
    np.testing.assert_allclose(bins["mean_accuracy"].to_numpy(), expected)
    np.testing.assert_allclose(bins["std_accuracy"].iloc[0], 0.1)


def test_log_bins_all_zero_counts():
    with pytest.warns(UserWarning, match="counts are all equal"):
        report = frequency_accuracy_report([0, 0, 0], [0.1, 0.2, 0.3])
    assert np.isnan(report.spearman) and np.isnan(report.pearson)
    assert report.bins["n_classes"].tolist() == [3, 0]


def test_custom_bins():
    bins = frequency_accuracy_report(COUNTS, ACCURACY, bins=[0, 10, np.inf]).bins
    assert bins["n_classes"].tolist() == [4, 4]
    np.testing.assert_allclose(
        bins["mean_accuracy"], [0.25, (0.5 + 0.45 + 0.8 + 0.9) / 4]
    )
    with pytest.raises(ValueError, match="outside the bins"):
        frequency_accuracy_report(COUNTS, ACCURACY, bins=[0, 10, 100])
    with pytest.raises(ValueError, match="strictly increasing"):
        frequency_accuracy_report(COUNTS, ACCURACY, bins=[0, 10, 10])
    with pytest.raises(ValueError, match="'bins' parameter .*'log'"):
        frequency_accuracy_report(COUNTS, ACCURACY, bins="linear")


def test_paper_bins():
    # data_analysis/correlation.ipynb: [0, 10, 20, ..., 100, 1000, 10000, 100000)
    bins = frequency_accuracy_report(COUNTS, ACCURACY, bins="paper").bins
    assert bins["low"].tolist()[:3] == [0, 10, 20]
    assert bins["high"].tolist()[-3:] == [10000, 100000, np.inf]
    # counts 0, 0, 3, 9 | 10 | 150 | 999 | 20000
    assert bins["n_classes"].tolist() == [4, 1] + [0] * 8 + [2, 0, 1, 0]


def test_series_are_aligned_on_index():
    shuffled = ACCURACY.sample(frac=1.0, random_state=0)
    a = frequency_accuracy_report(COUNTS, shuffled)
    b = frequency_accuracy_report(COUNTS.to_numpy(), ACCURACY.to_numpy())
    assert a.spearman == pytest.approx(b.spearman) and a.pearson == pytest.approx(
        b.pearson
    )
    assert a.data.loc["h", "accuracy"] == 0.9
    with pytest.raises(ValueError, match=r"only in counts \['h'\].*\['zz'\]"):
        frequency_accuracy_report(COUNTS, ACCURACY.rename({"h": "zz"}))


def test_nan_accuracy_left_out_with_warning():
    accuracy = ACCURACY.copy()
    accuracy["c"] = np.nan
    with pytest.warns(UserWarning, match=r"1 class.*\['c'\]"):
        report = frequency_accuracy_report(COUNTS, accuracy)
    assert len(report.data) == 7
    expected = stats.spearmanr(COUNTS.drop("c"), ACCURACY.drop("c")).statistic
    assert report.spearman == pytest.approx(expected)


@pytest.mark.parametrize(
    "counts, accuracy, match",
    [
        ([1, -2, 3], [0.1, 0.2, 0.3], "finite and >= 0"),
        ([1, 2], [0.1, 0.2, 0.3], "same length"),
        ([1], [0.5], "at least 2 classes"),
    ],
)
def test_report_errors(counts, accuracy, match):
    with pytest.raises(ValueError, match=match):
        frequency_accuracy_report(counts, accuracy)


def test_plot_returns_figure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    report = frequency_accuracy_report(COUNTS, ACCURACY)
    fig = report.plot()
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xscale() == "symlog"
    assert len(ax.collections[0].get_offsets()) == len(COUNTS)
    assert "Spearman" in ax.get_title()
    fig2 = Figure()
    ax2 = fig2.subplots()
    assert report.plot(ax=ax2) is fig2


def test_plot_without_matplotlib(monkeypatch):
    report = frequency_accuracy_report(COUNTS, ACCURACY)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install matplotlib.*skvlm\[plot\]"):
        report.plot()


def test_end_to_end_with_class_frequency():
    corpus = ["a cat", "a cat and a dog", "the cat", "an eel"]
    counts = class_frequency(corpus, ["cat", "dog", "eel", "yak"])
    accuracy = per_class_accuracy(
        ["cat", "dog", "eel", "yak", "yak"],
        ["cat", "dog", "cat", "cat", "yak"],
        labels=counts.index,
    )
    report = frequency_accuracy_report(counts, accuracy)
    assert report.data["count"].tolist() == [3, 1, 1, 0]
    assert report.data["accuracy"].tolist() == [1.0, 1.0, 0.0, 0.5]
