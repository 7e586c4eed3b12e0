"""Report: the one base of skvlm's reports (a table, a plot, a notebook view).

Every report (:class:`skvlm.probing.ProbeReport`, the tuning report, the
class-frequency report) is a table with a plot. The base gives them the same
face: ``to_frame()`` (the table, with ``cv_results_``-style column names where
there are folds: ``mean_test_score``, ``std_test_score``, ``rank_test_score``,
``param_*``), ``plot(ax=None)`` (a new figure, or drawn into the caller's
axes), and ``_repr_html_`` (the notebook view: title, settings, the plot
inline as an image, a sentence saying how to read it, and the table).

It sits at the bottom of the package (it imports nothing of skvlm), so reports
at any layer can use it.
"""

from __future__ import annotations

import base64
import html
import io


class Report:
    """Base of skvlm's reports; subclasses give the table and the drawing.

    Subclasses implement :meth:`to_frame` and :meth:`_draw` (which draws into
    a list of axes, one per panel), and may set :meth:`_panels`,
    :meth:`_title`, :meth:`_caption` and :meth:`_settings`.

    Examples
    --------
    >>> import pandas as pd
    >>> from skvlm._reporting import Report
    >>> class Scores(Report):
    ...     def to_frame(self):
    ...         return pd.DataFrame({"layer": [0, 1], "mean_test_score": [0.5, 0.8]})
    ...     def _draw(self, axes):
    ...         frame = self.to_frame()
    ...         axes[0].plot(frame["layer"], frame["mean_test_score"])
    >>> fig = Scores().plot()
    >>> len(fig.axes)
    1
    >>> "<img" in Scores()._repr_html_()
    True
    """

    _plot_size = (5.5, 3.6)
    _sharey = False

    def to_frame(self):
        """The report's table as a DataFrame (one row per site or item)."""
        raise NotImplementedError

    def _draw(self, axes):
        raise NotImplementedError

    def _panels(self):
        """``(number of panels, width ratios or None)``."""
        return 1, None

    def _title(self):
        return type(self).__name__

    def _caption(self):
        """One or two sentences that say how to read the plot."""
        return ""

    def _settings(self):
        return dict(getattr(self, "meta", {}) or {})

    def plot(self, ax=None):
        """Draw the report.

        Parameters
        ----------
        ax : matplotlib Axes, sequence of Axes or None, default=None
            Where to draw: None makes a new figure; otherwise one Axes per
            panel (a single Axes when the report has one panel).

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        n_panels, ratios = self._panels()
        if ax is None:
            Figure = _figure_class(type(self).__name__)
            width = self._plot_size[0] * (sum(ratios) if ratios else n_panels)
            fig = Figure(figsize=(width, self._plot_size[1]), layout="constrained")
            kwargs = {"width_ratios": ratios} if ratios else {}
            axes = list(
                fig.subplots(
                    1, n_panels, squeeze=False, sharey=self._sharey, gridspec_kw=kwargs
                )[0]
            )
        else:
            axes = list(ax) if isinstance(ax, (list, tuple)) else [ax]
            if hasattr(ax, "ravel"):  # an array of axes from plt.subplots
                axes = list(ax.ravel())
            if len(axes) != n_panels:
                raise ValueError(
                    f"{type(self).__name__}.plot draws {n_panels} panel(s); ax holds "
                    f"{len(axes)} Axes. Pass {n_panels} Axes, or ax=None for a new "
                    "figure."
                )
            fig = axes[0].figure
        self._draw(axes)
        return fig

    def _png(self):
        cached = getattr(self, "_png_cache", None)
        if cached is not None:
            return cached
        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()

    def _repr_html_(self):
        try:
            png = base64.b64encode(self._png()).decode("ascii")
            image = f'<img alt="{html.escape(self._title())}" src="data:image/png;base64,{png}">'
        except ImportError as exc:  # no matplotlib: the table still shows
            image = f"<p><i>{html.escape(str(exc))}</i></p>"
        settings = "; ".join(
            f"<b>{html.escape(str(k))}</b>: {html.escape(str(v))}"
            for k, v in self._settings().items()
            if v is not None
        )
        caption = html.escape(self._caption())
        table = self.to_frame().to_html(
            index=False, float_format=lambda v: f"{v:.4f}", max_rows=60
        )
        return (
            f"<div><h4>{html.escape(self._title())}</h4>"
            f"<p style='font-size:0.85em'>{settings}</p>{image}"
            f"<p style='font-size:0.85em'>{caption}</p>{table}</div>"
        )


def _figure_class(owner):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{owner}.plot needs matplotlib, which is not installed; install it "
            "with `pip install matplotlib` (or `pip install 'skvlm[plot]'`)."
        ) from None
    return Figure
