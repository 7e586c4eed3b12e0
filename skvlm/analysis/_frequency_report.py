"""Pair each class's corpus frequency with its accuracy: correlations, bins, plot."""

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import confusion_matrix

from .._reporting import Report
from .._sklearn_compat import StrOptions, validate_params


@validate_params(
    {
        "y_true": ["array-like"],
        "y_pred": ["array-like"],
        "labels": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def per_class_accuracy(y_true, y_pred, labels=None):
    """Accuracy within each true class (the recall of each class).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    labels : array-like or None, default=None
        The classes to report, in this order; None means the sorted distinct
        values of ``y_true``. A label absent from ``y_true`` gets NaN.

    Returns
    -------
    accuracy : pandas Series of float
        Indexed by label: the fraction of that class's samples predicted right.

    Examples
    --------
    >>> from skvlm.analysis import per_class_accuracy
    >>> per_class_accuracy(["cat", "cat", "dog", "dog"], ["cat", "dog", "dog", "dog"])
    cat    0.5
    dog    1.0
    Name: accuracy, dtype: float64
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of the same length; got "
            f"shapes {y_true.shape} and {y_pred.shape}."
        )
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(support > 0, np.diag(matrix) / support, np.nan)
    return pd.Series(accuracy, index=labels, name="accuracy")


class FrequencyAccuracyReport(Report):
    """Correlation of class frequency with per-class accuracy.

    Made by ``frequency_accuracy_report``; not meant to be built directly.

    Attributes
    ----------
    data : DataFrame
        One row per class: ``count`` and ``accuracy``.
    spearman, spearman_pvalue : float
        Spearman's rank correlation of count with accuracy, and its p-value.
    pearson, pearson_pvalue : float
        Pearson's correlation of ``log10(count + 1)`` with accuracy.
    pearson_raw, pearson_raw_pvalue : float
        Pearson's correlation of the raw count with accuracy (the paper's
        ``pearsonr(xs, ys)`` in ``data_analysis/correlation.ipynb``).
    bins : DataFrame
        One row per frequency bin: ``low`` (included), ``high`` (excluded),
        ``n_classes``, ``mean_accuracy`` (NaN for an empty bin), ``std_accuracy``.
    """

    def __init__(self, data, spearman, pearson, pearson_raw, bins):
        self.data = data
        self.spearman, self.spearman_pvalue = spearman
        self.pearson, self.pearson_pvalue = pearson
        self.pearson_raw, self.pearson_raw_pvalue = pearson_raw
        self.bins = bins

    def __repr__(self):
        return (
            f"FrequencyAccuracyReport(n_classes={len(self.data)}, "
            f"spearman={self.spearman:.3f}, "
            f"pearson_log10={self.pearson:.3f}, "
            f"pearson_raw={self.pearson_raw:.3f})"
        )

    def plot(self, ax=None):
        """Scatter accuracy against count, with the mean accuracy of each bin.

        The x axis is logarithmic above 1 and linear between 0 and 1
        (matplotlib's ``symlog``) so that classes never named stay visible.
        Needs matplotlib (``pip install matplotlib`` or ``pip install
        'skvlm[plot]'``).

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Draw into this Axes; None makes a new Figure.

        Returns
        -------
        fig : matplotlib Figure
            Save it with ``fig.savefig("frequency.png")``.
        """
        return super().plot(ax)

    _plot_size = (6.4, 4.2)

    def to_frame(self):
        """One row per class: ``count`` and ``accuracy``."""
        return self.data.copy()

    def _title(self):
        return "Class frequency and per-class accuracy"

    def _caption(self):
        return (
            "Each dot is a class; the red segments are the mean accuracy of the "
            "classes in each frequency bin."
        )

    def _settings(self):
        return {
            "Spearman": f"{self.spearman:.3f}",
            "Pearson (log10)": f"{self.pearson:.3f}",
        }

    def _draw(self, axes):
        ax = axes[0]
        ax.scatter(
            self.data["count"], self.data["accuracy"], s=14, alpha=0.5, label="class"
        )
        filled = self.bins[self.bins["n_classes"] > 0]
        for i, (_, row) in enumerate(filled.iterrows()):
            high = (
                row["high"]
                if np.isfinite(row["high"])
                else max(row["low"] * 10, self.data["count"].max())
            )
            ax.hlines(
                row["mean_accuracy"],
                row["low"],
                high,
                colors="C3",
                lw=2.5,
                label="mean per bin" if i == 0 else None,
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=-0.5)  # keeps the never-named classes (count 0) in view
        ax.set_xlabel("sentences naming the class")
        ax.set_ylabel("per-class accuracy")
        ax.set_title(
            f"Spearman {self.spearman:.2f}, Pearson (log10 count) {self.pearson:.2f}"
        )
        ax.legend(loc="best")


@validate_params(
    {
        "counts": ["array-like"],
        "per_class_accuracy": ["array-like"],
        "bins": [StrOptions({"log", "paper"}), "array-like"],
    },
    prefer_skip_nested_validation=True,
)
def frequency_accuracy_report(counts, per_class_accuracy, *, bins="log"):
    """Correlate how often each class is named with how well it is classified.

    The paper's analysis: LLaVA's ImageNet accuracy per class rises with how
    often the class name occurs in LLaVA's training text (Spearman 0.76).

    Parameters
    ----------
    counts : pandas Series or array-like of shape (n_classes,)
        Non-negative counts per class, e.g. from ``class_frequency``.
    per_class_accuracy : pandas Series or array-like of shape (n_classes,)
        Accuracy per class, e.g. from ``per_class_accuracy``. When both are
        Series they are aligned on their index (each class must be in both);
        otherwise they are paired by position. Classes with a NaN accuracy
        (no test sample) are left out with a warning.
    bins : "log", "paper" or array-like of increasing numbers, default="log"
        Frequency bins. ``"log"`` gives ``[0, 1)`` (never named), ``[1, 10)``,
        ``[10, 100)``, ... up to the decade of the largest count. ``"paper"``
        gives the edges of the paper's figure (``data_analysis/correlation.ipynb``:
        0, 10, 20, ..., 100, 1000, 10000, 100000), plus an open bin from 100000
        (the paper's code drops those counts). An array gives the bin edges: bin
        ``i`` holds counts ``edges[i] <= c < edges[i + 1]`` (use ``np.inf`` as
        the last edge for an open bin).

    Returns
    -------
    report : FrequencyAccuracyReport
        ``spearman`` (rank correlation of count and accuracy; ranks make the log
        irrelevant), ``pearson`` (correlation of ``log10(count + 1)`` with
        accuracy), ``pearson_raw`` (correlation of the raw count, the paper's
        Pearson), their p-values, ``bins`` (mean accuracy per bin), ``data``
        and ``plot()``.

    Examples
    --------
    >>> import pandas as pd
    >>> from skvlm.analysis import frequency_accuracy_report
    >>> counts = pd.Series({"cat": 12000, "dog": 800, "eel": 40, "yak": 3, "gnu": 0})
    >>> accuracy = pd.Series({"cat": 0.9, "dog": 0.7, "eel": 0.5, "yak": 0.1,
    ...                       "gnu": 0.2})
    >>> report = frequency_accuracy_report(counts, accuracy)
    >>> round(report.spearman, 2), round(report.pearson, 2), round(report.pearson_raw, 2)
    (0.9, 0.97, 0.74)
    >>> report.bins[["low", "high", "n_classes", "mean_accuracy"]]
          low     high  n_classes  mean_accuracy
    0     0.0      1.0          1            0.2
    1     1.0     10.0          1            0.1
    2    10.0    100.0          1            0.5
    3   100.0   1000.0          1            0.7
    4  1000.0  10000.0          0            NaN
    5 10000.0 100000.0          1            0.9
    """
    data = _paired(counts, per_class_accuracy)
    count = data["count"].to_numpy(dtype=float)
    accuracy = data["accuracy"].to_numpy(dtype=float)
    spearman = _correlation(stats.spearmanr, count, accuracy, "Spearman")
    pearson = _correlation(stats.pearsonr, np.log10(count + 1), accuracy, "Pearson")
    pearson_raw = _correlation(stats.pearsonr, count, accuracy, "Pearson")
    return FrequencyAccuracyReport(
        data, spearman, pearson, pearson_raw, _binned(count, accuracy, bins)
    )


def _paired(counts, accuracy):
    if isinstance(counts, pd.Series) and isinstance(accuracy, pd.Series):
        only_counts = counts.index.difference(accuracy.index)
        only_accuracy = accuracy.index.difference(counts.index)
        if len(only_counts) or len(only_accuracy):
            raise ValueError(
                f"counts and per_class_accuracy name different classes: only in "
                f"counts {only_counts.tolist()[:20]}, only in per_class_accuracy "
                f"{only_accuracy.tolist()[:20]}. Make both Series use the same "
                "class names as index (or pass plain arrays in the same order)."
            )
        if counts.index.has_duplicates:
            counts = counts[~counts.index.duplicated()]
        accuracy = accuracy[~accuracy.index.duplicated()].reindex(counts.index)
        index = counts.index
    else:
        index = (
            counts.index
            if isinstance(counts, pd.Series)
            else accuracy.index
            if isinstance(accuracy, pd.Series)
            else None
        )
        counts, accuracy = np.asarray(counts), np.asarray(accuracy)
        if counts.ndim != 1 or counts.shape != accuracy.shape:
            raise ValueError(
                f"counts and per_class_accuracy must be 1-D of the same length; "
                f"got shapes {counts.shape} and {accuracy.shape}."
            )
    data = pd.DataFrame(
        {
            "count": np.asarray(counts, dtype=float),
            "accuracy": np.asarray(accuracy, dtype=float),
        },
        index=index,
    )
    bad = data.index[~np.isfinite(data["count"]) | (data["count"] < 0)]
    if len(bad):
        raise ValueError(
            f"counts must be finite and >= 0; classes {bad.tolist()[:20]} are not."
        )
    missing = data["accuracy"].isna()
    if missing.any():
        warnings.warn(
            f"Left out {int(missing.sum())} class(es) with NaN accuracy "
            f"(no test sample?): {data.index[missing].tolist()[:20]}.",
            UserWarning,
            stacklevel=3,
        )
        data = data[~missing]
    if len(data) < 2:
        raise ValueError(f"Correlations need at least 2 classes; got {len(data)}.")
    return data


def _correlation(func, x, y, name):
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        warnings.warn(
            f"{name} correlation is undefined: the "
            f"{'counts' if np.ptp(x) == 0 else 'accuracies'} are all "
            "equal. Reporting NaN.",
            UserWarning,
            stacklevel=3,
        )
        return np.nan, np.nan
    result = func(x, y)
    return float(result.statistic), float(result.pvalue)


#: The bin edges of the paper's frequency figure (data_analysis/correlation.ipynb).
PAPER_BINS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 1000, 10000, 100000)


def _binned(count, accuracy, bins):
    if isinstance(bins, str) and bins == "paper":
        bins = [*PAPER_BINS, np.inf]
    if isinstance(bins, str):
        if bins != "log":
            raise ValueError(
                f"bins must be 'log', 'paper' or an array of edges; got {bins!r}."
            )
        top = max(1, int(np.floor(np.log10(max(count.max(), 1)))) + 1)
        edges = np.concatenate([[0.0], 10.0 ** np.arange(top + 1)])
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(
                f"bins must be at least 2 strictly increasing edges; got {bins!r}."
            )
        outside = (count < edges[0]) | (count >= edges[-1])
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} count(s) fall outside the bins "
                f"[{edges[0]}, {edges[-1]}), e.g. {count[outside][:5].tolist()}; "
                "widen the edges (np.inf as last edge makes an open bin)."
            )
    which = np.searchsorted(edges, count, side="right") - 1
    rows = []
    for i in range(len(edges) - 1):
        members = accuracy[which == i]
        rows.append(
            {
                "low": edges[i],
                "high": edges[i + 1],
                "n_classes": len(members),
                "mean_accuracy": members.mean() if len(members) else np.nan,
                "std_accuracy": members.std() if len(members) else np.nan,
            }
        )
    return pd.DataFrame(rows)
