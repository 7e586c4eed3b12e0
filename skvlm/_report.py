"""ProbeReport: the table of probe_layers, its plot, and its files."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

_NEEDS_MATPLOTLIB = (
    "ProbeReport.plot needs matplotlib, which is not installed; install it with "
    "`pip install 'skvlm[plot]'` (or `pip install matplotlib`)."
)


class ProbeReport:
    """The scores of a probe at every site, as a table, a plot and files.

    Made by ``skvlm.probe_layers``; not meant to be built by hand.

    Parameters
    ----------
    results : DataFrame
        One row per site: ``stage``, ``layer``, ``pooling``, ``n_features``,
        ``mean_score``, ``std_score`` (over folds), ``fit_time`` and
        ``score_time`` (mean seconds per fold), ``split{k}_score`` and
        ``rank`` (1 = best).
    meta : dict
        What was probed and how: ``model``, ``n_samples``, ``n_classes``,
        ``chance``, ``cv``, ``scoring``, ``probe``, ``prompt``,
        ``extract_time``.

    Attributes
    ----------
    results : DataFrame
        As above.
    meta : dict
        As above.
    best_ : pandas Series
        The row of the best site (highest ``mean_score``; the first on ties).
    best_params_ : dict
        ``{"stage", "layer", "pooling"}`` of the best site, ready for
        ``VLMEmbeddingTransformer(model, **report.best_params_)``.

    Examples
    --------
    >>> import pandas as pd
    >>> from skvlm.probing import ProbeReport
    >>> results = pd.DataFrame({"stage": ["vision"] * 2, "layer": [0, 1],
    ...                         "pooling": ["cls", "cls"], "mean_score": [0.5, 0.75],
    ...                         "std_score": [0.1, 0.05]})
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

    @property
    def best_(self):
        return self.results.loc[self.results["mean_score"].idxmax()]

    @property
    def best_params_(self):
        best = self.best_
        pooling = best["pooling"]
        if isinstance(pooling, (np.integer, int)):
            pooling = int(pooling)
        return {"stage": best["stage"], "layer": int(best["layer"]), "pooling": pooling}

    def __repr__(self):
        best = self.best_params_
        return (
            f"ProbeReport({len(self.results)} sites of {self.meta.get('model')!r}; "
            f"best {best['stage']} layer {best['layer']} {best['pooling']}: "
            f"{self.best_['mean_score']:.3f})"
        )

    def _repr_html_(self):
        return self._table_frame().to_html(index=False)

    # -- text ---------------------------------------------------------------------
    def _table_frame(self):
        r = self.results
        best = r["mean_score"].idxmax()
        score = [
            f"{m:.3f} ± {s:.3f}" + (" *" if i == best else "")
            for i, m, s in zip(r.index, r["mean_score"], r["std_score"], strict=True)
        ]
        return pd.DataFrame(
            {
                "stage": r["stage"],
                "layer": r["layer"],
                "pooling": r["pooling"].astype(str),
                "score": score,
            }
        )

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
        """Write the results table as CSV (one row per site).

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
        """Write ``{"meta": ..., "results": [one object per site]}`` as JSON.

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
                f"{self.best_['mean_score']:.3f} ± {self.best_['std_score']:.3f}"
            ),
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

    def _png(self):
        cached = getattr(self, "_png_cache", None)
        if cached is not None:
            return cached
        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png", dpi=120, bbox_inches="tight")
        return buffer.getvalue()

    # -- plot ------------------------------------------------------------------------
    def plot(self, *, title=None):
        """Score against layer: one panel per stage, one line per pooling.

        The band around each line is ± one standard deviation over folds; a
        stage with a single layer (the projector) shows points with error bars.
        The best site is circled and the majority-class accuracy (when known)
        is a dashed line.

        Parameters
        ----------
        title : str, default=None
            Figure title; None names the model.

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(_NEEDS_MATPLOTLIB) from None
        r = self.results
        stages = list(dict.fromkeys(r["stage"]))
        widths = [
            max(1.0, min(3.0, r.loc[r["stage"] == s, "layer"].nunique() / 3))
            for s in stages
        ]
        fig = Figure(figsize=(2.2 + 2.6 * sum(widths), 3.6), layout="constrained")
        axes = fig.subplots(
            1,
            len(stages),
            sharey=True,
            squeeze=False,
            gridspec_kw={"width_ratios": widths},
        )[0]
        best = r.loc[r["mean_score"].idxmax()]
        for ax, stage in zip(axes, stages, strict=True):
            part = r[r["stage"] == stage]
            for pooling in dict.fromkeys(part["pooling"]):
                line = part[part["pooling"] == pooling].sort_values("layer")
                x, m, s = line["layer"], line["mean_score"], line["std_score"]
                label = f"pos {pooling}" if not isinstance(pooling, str) else pooling
                if len(line) == 1:
                    ax.errorbar(x, m, yerr=s, fmt="o", capsize=3, label=label)
                else:
                    (handle,) = ax.plot(x, m, marker="o", ms=4, label=label)
                    ax.fill_between(
                        x, m - s, m + s, alpha=0.2, color=handle.get_color()
                    )
            if best["stage"] == stage:
                ax.plot(
                    [best["layer"]],
                    [best["mean_score"]],
                    "o",
                    ms=12,
                    mfc="none",
                    mec="black",
                    label="best",
                )
            chance = self.meta.get("chance")
            if chance is not None:
                ax.axhline(chance, ls="--", lw=1, color="grey", label="majority class")
            layers = sorted(part["layer"].unique())
            ax.set_xticks(
                layers if len(layers) <= 12 else layers[:: math.ceil(len(layers) / 12)]
            )
            ax.set_xlabel("layer")
            ax.set_title(stage)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", loc="lower right")
        axes[0].set_ylabel(_score_label(self.meta))
        fig.suptitle(title or f"Linear probes of {self.meta.get('model', 'the model')}")
        return fig


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
<h2>Settings</h2><table>{settings}</table>
<h2>Every site</h2>
{table}
<p>Written by skvlm's probe_layers.</p>
</body></html>
"""
