"""site_similarity: CKA or RSA between every pair of sites, of one model or two."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from sklearn.base import clone

from .._embedding import VLMEmbeddingTransformer
from .._site import Site
from ..models import describe_sites
from ._similarity import cka, rsa

__all__ = ["SiteSimilarity", "site_similarity"]

_MEASURES = ("cka", "rsa")


class SiteSimilarity:
    """A site x site similarity matrix, with its labels.

    Parameters
    ----------
    matrix : ndarray of shape (n_rows, n_columns)
    rows, columns : list of str
        The sites' labels (store names such as ``vision/l3/mean``, prefixed by
        the model's name when the entries come from several models).
    measure : str
        What the values are (``"linear CKA"``, ``"RSA (correlation, spearman)"``...).

    Attributes
    ----------
    matrix, rows, columns, measure
        As given.
    """

    def __init__(self, matrix, rows, columns, measure):
        self.matrix = np.asarray(matrix, dtype=float)
        self.rows = list(rows)
        self.columns = list(columns)
        self.measure = measure

    def __repr__(self):
        return (
            f"SiteSimilarity({self.measure}, {len(self.rows)} x {len(self.columns)} "
            "sites)"
        )

    def to_frame(self):
        """The matrix as a pandas DataFrame indexed by the sites' labels.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        return pd.DataFrame(self.matrix, index=self.rows, columns=self.columns)

    def plot(self, ax=None, *, annotate=None, cmap="viridis"):
        """Draw the matrix as a heatmap (needs matplotlib).

        Parameters
        ----------
        ax : matplotlib.axes.Axes, default=None
            Where to draw; None makes a new figure.
        annotate : bool, default=None
            Write each value in its cell; None does so up to 12 x 12 sites.
        cmap : str, default="viridis"

        Returns
        -------
        ax : matplotlib.axes.Axes
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "SiteSimilarity.plot needs matplotlib: pip install 'skvlm[plot]' "
                "(or pip install matplotlib)."
            ) from exc
        if ax is None:
            size = 1.5 + 0.55 * max(len(self.columns), 4)
            ax = Figure(
                figsize=(size + 1.5, 1.0 + 0.5 * max(len(self.rows), 4))
            ).add_subplot()
        image = ax.imshow(
            self.matrix, cmap=cmap, vmin=min(0.0, self.matrix.min()), vmax=1.0
        )
        ax.set_xticks(range(len(self.columns)), self.columns, rotation=60, ha="right")
        ax.set_yticks(range(len(self.rows)), self.rows)
        if annotate is None:
            annotate = max(self.matrix.shape) <= 12
        if annotate:
            for (i, j), value in np.ndenumerate(self.matrix):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 0.6 else "black",
                )
        ax.figure.colorbar(image, ax=ax, label=self.measure)
        ax.set_title(self.measure)
        return ax


def _model_name(model):
    return os.path.basename(os.fspath(model).rstrip("/\\")) or os.fspath(model)


def _site_of(transformer):
    if not hasattr(transformer, "n_features_out_"):
        transformer = transformer.fit(None)
    layers = "+".join(map(str, transformer.layers_))
    return Site(transformer.stage, 0, transformer.pooling_).store_name.replace(
        "/l0/", f"/l{layers}/"
    )


def _entries(source, X, sites):
    """(model name or None, site label, features) of each entry."""
    if isinstance(source, Mapping):
        if sites is not None:
            raise ValueError(
                "sites= applies to a transformer source; with a mapping of "
                "features, its keys are the sites."
            )
        return [(None, str(k), np.asarray(v)) for k, v in source.items()]
    if not isinstance(source, VLMEmbeddingTransformer):
        raise TypeError(
            "site_similarity's source must be a VLMEmbeddingTransformer (its "
            "cache= store, when filled, serves the sites without a forward pass) "
            f"or a mapping {{site label: features}}, got {type(source).__name__}."
        )
    if X is None:
        raise ValueError("site_similarity needs X, the images, with a transformer.")
    if sites is None:
        table = describe_sites(source.model, model_kwargs=source.model_kwargs)
        table = table[table["stage"] == source.stage]
        sites = [
            Site(source.stage, int(layer), pooling)
            for layer, pooling in zip(table["layer"], table["pooling"], strict=True)
        ]
    entries = []
    for item in sites:
        if isinstance(item, VLMEmbeddingTransformer):
            transformer = clone(item)
        else:
            site = Site.parse(item) if isinstance(item, str) else item
            if isinstance(site, tuple) and not isinstance(site, Site):
                site = Site(*site)
            if not isinstance(site, Site):
                raise TypeError(
                    f"sites entry {item!r} is not a site; give a Site, a store name "
                    "such as 'vision/l3/mean', or a VLMEmbeddingTransformer."
                )
            transformer = clone(source).set_params(
                stage=site.stage, layer=site.layer, pooling=site.pooling
            )
        features = transformer.fit_transform(X)
        entries.append(
            (_model_name(transformer.model), _site_of(transformer), features)
        )
    return entries


def _labels(entries):
    models = {model for model, _, _ in entries if model is not None}
    if len(models) > 1:
        return [f"{model}:{label}" for model, label, _ in entries]
    return [label for _, label, _ in entries]


def site_similarity(
    source,
    X=None,
    sites=None,
    *,
    other=None,
    other_sites=None,
    measure="cka",
    kernel="linear",
    debiased=False,
    metric="correlation",
    compare="spearman",
):
    """Similarity between every pair of sites: layers, stages, or two models.

    Parameters
    ----------
    source : VLMEmbeddingTransformer or mapping
        A transformer whose parameters (model, prompt, cache...) every site
        shares, or a mapping ``{label: features}`` of precomputed features (rows
        aligned). With ``cache=`` set and filled (``precompute``), the sites are
        read from the store and no forward pass runs.
    X : collection of images, default=None
        The images (needed with a transformer).
    sites : list, default=None
        Each entry a :class:`skvlm.Site`, a store name (``"vision/l3/mean"``), a
        ``(stage, layer, pooling)`` tuple, or a configured
        ``VLMEmbeddingTransformer`` (of any model: entries of several models
        compare the same way and their labels carry the model's name). None
        takes every site of the source's stage.
    other, other_sites : default=None
        A second source (and its sites) for the columns, e.g. another model;
        None compares the rows' sites with themselves.
    measure : {"cka", "rsa"}, default="cka"
    kernel, debiased :
        As for :func:`skvlm.analysis.cka`.
    metric, compare :
        As for :func:`skvlm.analysis.rsa`.

    Returns
    -------
    SiteSimilarity
        ``matrix[i, j]`` compares row site i with column site j.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.analysis import site_similarity
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(30, 5))
    >>> result = site_similarity({"a": a, "2a": 2 * a, "noise": rng.normal(size=(30, 5))})
    >>> result.to_frame().round(2).loc["a", "2a"]
    np.float64(1.0)
    """
    if measure not in _MEASURES:
        raise ValueError(f"measure={measure!r} is not one of {_MEASURES}.")
    rows = _entries(source, X, sites)
    columns = rows if other is None else _entries(other, X, other_sites)
    if other is not None:
        labels = _labels(rows + columns)
        row_labels, column_labels = labels[: len(rows)], labels[len(rows) :]
    else:
        row_labels = column_labels = _labels(rows)
    if measure == "cka":
        name = f"{'debiased ' if debiased else ''}{kernel} CKA"

        def similarity(a, b):
            return cka(a, b, kernel=kernel, debiased=debiased)
    else:
        name = f"RSA ({metric} RDM, {compare})"

        def similarity(a, b):
            return rsa(a, b, metric=metric, compare=compare)

    matrix = np.empty((len(rows), len(columns)))
    for i, (_, _, a) in enumerate(rows):
        for j, (_, _, b) in enumerate(columns):
            if other is None and j < i:
                matrix[i, j] = matrix[j, i]
            else:
                matrix[i, j] = similarity(a, b)
    return SiteSimilarity(matrix, row_labels, column_labels, name)
