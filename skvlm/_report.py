"""ProbeReport: the table of probe_layers, its statistics, its plot and its files."""

from __future__ import annotations

import base64
import html
import json
import math
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ._reporting import Report

Comparison = namedtuple(
    "Comparison", ["statistic", "pvalue", "mean_difference", "df", "test"]
)
_TEST = "corrected resampled t-test (Nadeau and Bengio, 2003)"
_SITE = ("stage", "layer", "pooling")


def corrected_t_interval(scores, n_train, n_test, confidence):
    """Fold-based t interval of the mean score, Nadeau-Bengio corrected.

    The folds' training sets overlap, so their scores are correlated and the
    plain ``s / sqrt(k)`` understates the spread. Nadeau and Bengio (2003)
    correct the variance of the mean of ``k`` fold scores to ``(1 / k +
    n_test / n_train) * s^2``; the interval is ``mean ± t_{k-1} * sqrt(that)``.

    Parameters
    ----------
    scores : array-like of shape (n_folds,)
    n_train, n_test : float
        Rows in a training and a test fold (their means over folds).
    confidence : float
        For example 0.95.

    Returns
    -------
    low, high : float

    Examples
    --------
    >>> from skvlm.probing import corrected_t_interval
    >>> low, high = corrected_t_interval([0.8, 0.9, 0.85], 20, 10, 0.95)
    >>> round(low, 3), round(high, 3)
    (0.654, 1.046)
    """
    scores = np.asarray(scores, dtype=float)
    k = scores.size
    mean = scores.mean()
    if k < 2:
        return float(mean), float(mean)
    half = stats.t.ppf((1 + confidence) / 2, k - 1) * math.sqrt(
        (1 / k + n_test / n_train) * scores.var(ddof=1)
    )
    return float(mean - half), float(mean + half)


class ProbeReport(Report):
    """The scores of a probe at every site, as a table, a plot and files.

    Made by ``skvlm.probe_layers``; not meant to be built by hand.

    Parameters
    ----------
    results : DataFrame
        One row per candidate (a site, and a ``C`` when the probe sweeps
        several), with ``GridSearchCV.cv_results_``'s names: ``param_stage``,
        ``param_layer``, ``param_pooling`` (and ``param_C``), ``n_features``,
        ``mean_test_score``, ``std_test_score`` (over folds),
        ``rank_test_score`` (1 = best), ``split{k}_test_score``,
        ``mean_fit_time`` and ``mean_score_time`` (seconds per fold); with a
        control task ``control_score`` and ``selectivity``; with ``ci``,
        ``score_ci_low`` and ``score_ci_high``.
    meta : dict
        What was probed and how: ``model``, ``n_samples``, ``n_classes``,
        ``chance``, ``cv``, ``scoring``, ``probe``, ``prompt``,
        ``extract_time``, ``n_train`` and ``n_test`` (rows per fold),
        ``control``, ``ci``.

    Attributes
    ----------
    results : DataFrame
        As above; also :meth:`to_frame`.
    meta : dict
        As above.
    cv_results_ : dict of arrays
        ``results`` in ``GridSearchCV.cv_results_``'s form (``params``,
        ``param_*`` masked arrays, ``mean_test_score``, ...), for code that
        reads a search's results.
    best_ : pandas Series
        The row of the best candidate (highest ``mean_test_score``; the first
        on ties).
    best_params_ : dict
        ``{"stage", "layer", "pooling"}`` of the best site, ready for
        ``VLMEmbeddingTransformer(model, **report.best_params_)``.
    control_labels_ : ndarray of shape (n_images,)
        With ``control="shuffled"``: the control task's labels.

    Examples
    --------
    >>> import pandas as pd
    >>> from skvlm.probing import ProbeReport
    >>> results = pd.DataFrame({"param_stage": ["vision"] * 2, "param_layer": [0, 1],
    ...                         "param_pooling": ["cls", "cls"],
    ...                         "mean_test_score": [0.5, 0.75],
    ...                         "std_test_score": [0.1, 0.05]})
    >>> report = ProbeReport(results, {"model": "m"})
    >>> report.best_params_
    {'stage': 'vision', 'layer': 1, 'pooling': 'cls'}
    >>> print(report.to_text())
     stage layer pooling score
    vision     0     cls 0.500 ± 0.100
    vision     1     cls 0.750 ± 0.050 *
    """

    def __init__(self, results, meta=None):
        self.results = results
        self.meta = dict(meta or {})

    # -- the table ------------------------------------------------------------------
    def to_frame(self):
        """The results table (one row per candidate), as a DataFrame copy."""
        return self.results.copy()

    @property
    def best_(self):
        return self.results.loc[self.results["mean_test_score"].idxmax()]

    @property
    def best_params_(self):
        best = self.best_
        return {
            "stage": best["param_stage"],
            "layer": int(best["param_layer"]),
            "pooling": _plain(best["param_pooling"]),
        }

    @property
    def cv_results_(self):
        r = self.results
        names = [c for c in r.columns if c.startswith("param_")]
        out = {
            "params": [
                {
                    name[len("param_") :]: _plain(v)
                    for name, v in zip(names, row, strict=True)
                }
                for row in r[names].itertuples(index=False)
            ]
        }
        for name in names:
            out[name] = np.ma.MaskedArray(
                np.array([_plain(v) for v in r[name]], dtype=object),
                mask=False,
            )
        for name in r.columns:
            if name not in names and name != "n_features":
                out[name] = r[name].to_numpy()
        return out

    def __repr__(self):
        best = self.best_params_
        return (
            f"ProbeReport({len(self.results)} candidates of "
            f"{self.meta.get('model')!r}; best {best['stage']} layer "
            f"{best['layer']} {best['pooling']}: "
            f"{self.best_['mean_test_score']:.3f})"
        )

    # -- statistics ------------------------------------------------------------------
    def compare(self, site_a, site_b):
        """Paired test of two sites' scores on the same folds.

        The corrected resampled t-test of Nadeau and Bengio (2003): with ``d_k``
        the difference of the two sites' scores on fold ``k`` (the folds are
        the same for every site), ``t = mean(d) / sqrt((1 / K + n_test /
        n_train) * var(d))`` with ``K - 1`` degrees of freedom; the correction
        accounts for the overlap of the folds' training sets, which makes the
        plain paired t-test far too eager.

        Parameters
        ----------
        site_a, site_b : tuple or dict
            ``(stage, layer, pooling)`` (or a dict with those keys); add a
            fourth item (or a ``"C"`` key) to pick one ``C`` of a probe that
            swept several, else the site's best ``C`` is used.

        Returns
        -------
        result : Comparison
            ``statistic`` (t), ``pvalue`` (two-sided), ``mean_difference``
            (a - b), ``df`` and ``test`` (its name).

        Examples
        --------
        >>> import pandas as pd
        >>> from skvlm.probing import ProbeReport
        >>> results = pd.DataFrame({
        ...     "param_stage": ["vision"] * 2, "param_layer": [0, 1],
        ...     "param_pooling": ["cls", "cls"], "mean_test_score": [0.6, 0.8],
        ...     "split0_test_score": [0.5, 0.8], "split1_test_score": [0.6, 0.7],
        ...     "split2_test_score": [0.7, 0.9]})
        >>> report = ProbeReport(results, {"n_train": 20, "n_test": 10})
        >>> result = report.compare(("vision", 1, "cls"), ("vision", 0, "cls"))
        >>> round(result.statistic, 3), round(result.mean_difference, 3)
        (2.191, 0.2)
        """
        a, b = self._splits(site_a), self._splits(site_b)
        d = a - b
        k = d.size
        n_train, n_test = self.meta.get("n_train"), self.meta.get("n_test")
        if n_train is None or n_test is None or k < 2:
            raise ValueError(
                "compare needs the folds' sizes (meta 'n_train', 'n_test') and 2 "
                "folds or more; reports from probe_layers have them."
            )
        var = d.var(ddof=1) * (1 / k + n_test / n_train)
        if var == 0:
            t = 0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean())
        else:
            t = d.mean() / math.sqrt(var)
        p = float(2 * stats.t.sf(abs(t), k - 1))
        return Comparison(float(t), p, float(d.mean()), k - 1, _TEST)

    def _splits(self, site):
        if isinstance(site, dict):
            key = [site[n] for n in _SITE] + ([site["C"]] if "C" in site else [])
        else:
            key = list(site)
        r = self.results
        mask = (
            (r["param_stage"] == key[0])
            & (r["param_layer"] == key[1])
            & (r["param_pooling"].astype(str) == str(key[2]))
        )
        if len(key) > 3:
            mask &= np.isclose(r.get("param_C", np.nan), key[3])
        rows = r[mask]
        if rows.empty:
            sites = ", ".join(
                str(tuple(_plain(v) for v in row))
                for row in r[[f"param_{n}" for n in _SITE]].drop_duplicates().values
            )
            raise ValueError(
                f"site {tuple(key)} is not in the report; its sites are {sites}."
            )
        row = rows.loc[rows["mean_test_score"].idxmax()]
        columns = sorted(
            (
                c
                for c in r.columns
                if c.startswith("split") and c.endswith("_test_score")
            ),
            key=lambda c: int(c[len("split") : -len("_test_score")]),
        )
        return row[columns].to_numpy(dtype=float)

    # -- text ---------------------------------------------------------------------
    def _table_frame(self):
        r = self.results
        best = r["mean_test_score"].idxmax()
        score = [
            f"{m:.3f} ± {s:.3f}" + (" *" if i == best else "")
            for i, m, s in zip(
                r.index, r["mean_test_score"], r["std_test_score"], strict=True
            )
        ]
        frame = {
            "stage": r["param_stage"],
            "layer": r["param_layer"],
            "pooling": r["param_pooling"].astype(str),
        }
        if "param_C" in r:
            frame["C"] = [f"{c:g}" for c in r["param_C"]]
        frame["score"] = score
        if "selectivity" in r:
            frame["control"] = [f"{v:.3f}" for v in r["control_score"]]
            frame["selectivity"] = [f"{v:+.3f}" for v in r["selectivity"]]
        return pd.DataFrame(frame)

    def to_text(self):
        """A compact table: one line per site, mean ± std, the best marked ``*``.

        Returns
        -------
        text : str
        """
        frame = self._table_frame().astype(str)
        widths = {c: max(len(c), *(len(v) for v in frame[c])) for c in frame}

        # Numbers and names right-aligned; the score left-aligned so the
        # best-site star trails its number.
        def line(values):
            cells = [
                v.ljust(widths[c]) if c == "score" else v.rjust(widths[c])
                for c, v in zip(frame.columns, values, strict=True)
            ]
            return " ".join(cells).rstrip()

        rows = [line(frame.columns)] + [line(row) for row in frame.to_numpy()]
        return "\n".join(rows)

    # -- files ---------------------------------------------------------------------
    def to_csv(self, path):
        """Write the results table as CSV (one row per candidate).

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        path : Path
        """
        path = Path(path)
        self.results.to_csv(path, index=False)
        return path

    def to_json(self, path):
        """Write ``{"meta": ..., "results": [one object per candidate]}`` as JSON.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        path : Path
        """
        path = Path(path)
        records = json.loads(self.results.to_json(orient="records"))
        payload = {
            "meta": self.meta,
            "best": _jsonable(self.best_params_),
            "results": records,
        }
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return path

    def to_html(self, path=None):
        """A self-contained HTML page: the settings, the table and the plot.

        The plot is embedded as a base64 PNG, so the file can be mailed or
        opened anywhere without its folder.

        Parameters
        ----------
        path : str, Path or None, default=None
            Where to write it; None only returns the text.

        Returns
        -------
        html : str
        """
        png = base64.b64encode(self._png()).decode("ascii")
        settings = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.meta.items()
        )
        best = self.best_params_
        table = self.results.to_html(index=False, float_format=lambda v: f"{v:.4f}")
        page = _PAGE.format(
            title=html.escape(f"Probe report: {self.meta.get('model', '')}"),
            best=html.escape(
                f"{best['stage']} layer {best['layer']}, pooling {best['pooling']}: "
                f"{self.best_['mean_test_score']:.3f} ± "
                f"{self.best_['std_test_score']:.3f}"
            ),
            caption=html.escape(self._caption()),
            settings=settings,
            png=png,
            table=table,
        )
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def save(self, folder):
        """Write results.csv, results.json, probe_layers.png and report.html.

        Parameters
        ----------
        folder : str or Path
            Created if missing.

        Returns
        -------
        paths : dict of str to Path
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "csv": self.to_csv(folder / "results.csv"),
            "json": self.to_json(folder / "results.json"),
            "png": folder / "probe_layers.png",
            "html": folder / "report.html",
        }
        png = self._png()
        paths["png"].write_bytes(png)
        self._png_cache = png  # the page embeds the same picture: draw it once
        try:
            self.to_html(paths["html"])
        finally:
            del self._png_cache
        return paths

    # -- plot ------------------------------------------------------------------------
    def _title(self):
        return f"Linear probes of {self.meta.get('model', 'the model')}"

    def _band(self):
        """``(low, high, label)`` columns of the band."""
        r = self.results
        if "score_ci_low" in r:
            level = self.meta.get("ci")
            level = f"{100 * level:g}% " if level else ""
            return (
                r["score_ci_low"],
                r["score_ci_high"],
                f"{level}CI (fold t interval, Nadeau-Bengio corrected)",
            )
        return (
            r["mean_test_score"] - r["std_test_score"],
            r["mean_test_score"] + r["std_test_score"],
            "± 1 std over folds",
        )

    def _caption(self):
        _, _, band = self._band()
        text = (
            f"Mean score over the cross-validation folds at each layer; the "
            f"shaded band (or error bar) is the {band}."
        )
        if "control_score" in self.results:
            text += (
                " Dotted lines: the same probe on the same folds with the labels "
                "shuffled per image (control task, Hewitt and Liang 2019); "
                "selectivity is the gap between the two."
            )
        if self.meta.get("chance") is not None:
            text += " Dashed grey: the majority-class accuracy."
        if "param_C" in self.results:
            text += " Each point is the site's best C."
        return text

    def _stages(self):
        return list(dict.fromkeys(self.results["param_stage"]))

    def _panels(self):
        r = self.results
        widths = [
            max(
                1.0, min(3.0, r.loc[r["param_stage"] == s, "param_layer"].nunique() / 3)
            )
            for s in self._stages()
        ]
        return len(widths), widths

    def plot(self, ax=None, *, title=None):
        """Score against layer: one panel per stage, one line per pooling.

        The band around each line is the interval of ``ci`` when it was asked
        for (a fold-based t interval with the Nadeau-Bengio corrected
        variance), else ± one standard deviation over folds; a stage with a
        single layer (the projector) shows points with error bars. A control
        task's score is a dotted line of the same colour. The best site is
        circled and the majority-class accuracy (when known) is a dashed
        line. The legend names the band.

        Parameters
        ----------
        ax : matplotlib Axes, sequence of Axes or None, default=None
            One Axes per probed stage; None makes a new figure.
        title : str, default=None
            Figure title (only for a new figure); None names the model.

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        fig = super().plot(ax)
        if ax is None:
            fig.suptitle(title or self._title())
        return fig

    def _draw(self, axes):
        r = self.results.assign(_low=self._band()[0], _high=self._band()[1])
        band_label = self._band()[2]
        if "param_C" in r:  # the best C of each site
            best_rows = r.groupby(
                ["param_stage", "param_layer", r["param_pooling"].astype(str)],
                sort=False,
            )["mean_test_score"].idxmax()
            r = r.loc[sorted(best_rows.to_numpy())]
        best = r.loc[r["mean_test_score"].idxmax()]
        for ax, stage in zip(axes, self._stages(), strict=True):
            part = r[r["param_stage"] == stage]
            for pooling in dict.fromkeys(part["param_pooling"]):
                line = part[part["param_pooling"] == pooling].sort_values("param_layer")
                x, m = line["param_layer"], line["mean_test_score"]
                label = f"pos {pooling}" if not isinstance(pooling, str) else pooling
                if len(line) == 1:
                    err = np.vstack([m - line["_low"], line["_high"] - m])
                    handle = ax.errorbar(
                        x, m, yerr=err, fmt="o", capsize=3, label=label
                    )
                    color = handle[0].get_color()
                else:
                    (handle,) = ax.plot(x, m, marker="o", ms=4, label=label)
                    color = handle.get_color()
                    ax.fill_between(
                        x, line["_low"], line["_high"], alpha=0.2, color=color
                    )
                if "control_score" in line:
                    ax.plot(x, line["control_score"], ls=":", marker=".", color=color)
            if best["param_stage"] == stage:
                ax.plot(
                    [best["param_layer"]],
                    [best["mean_test_score"]],
                    "o",
                    ms=12,
                    mfc="none",
                    mec="black",
                    label="best",
                )
            chance = self.meta.get("chance")
            if chance is not None:
                ax.axhline(chance, ls="--", lw=1, color="grey", label="majority class")
            # Legend entries for what the band and the dotted lines are.
            ax.fill_between([], [], [], color="grey", alpha=0.2, label=band_label)
            if "control_score" in part:
                ax.plot([], [], ls=":", color="grey", label="control (shuffled labels)")
            layers = sorted(part["param_layer"].unique())
            ax.set_xticks(
                layers if len(layers) <= 12 else layers[:: math.ceil(len(layers) / 12)]
            )
            ax.set_xlabel("layer")
            ax.set_title(stage)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small", loc="best")
        axes[0].set_ylabel(_score_label(self.meta))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _score_label(meta):
    folds = meta.get("cv")
    scoring = meta.get("scoring") or "score"
    scoring = "accuracy" if scoring.startswith("the probe's score") else scoring
    return f"{scoring} ({folds})" if folds else scoring


def _jsonable(value):
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in value.items()}


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
<p><b>Best site:</b> {best}</p>
<img alt="probe score against layer" src="data:image/png;base64,{png}">
<p>{caption}</p>
<h2>Settings</h2><table>{settings}</table>
<h2>Every site</h2>
{table}
<p>Written by skvlm's probe_layers.</p>
</body></html>
"""
