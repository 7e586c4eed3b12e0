"""Base model against tuned model: accuracy per strategy and class, probe curves.

What ``skvlm tune`` prints and writes. It sits beside ``probing`` at the top of
the package, because it runs ``probe_layers`` on both models.
"""

from __future__ import annotations

import base64
import copy
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ._embedding import VLMEmbeddingTransformer
from ._reporting import Report
from .classifiers import VLMGenerativeClassifier
from .probing import default_probe, probe_layers


class TuningReport(Report):
    """The comparison of a base VLM and its tuned version on held-out images.

    Made by :func:`compare_models`; not meant to be built by hand.

    Parameters
    ----------
    accuracy : DataFrame
        ``model`` ("base" or "tuned"), ``strategy``, ``accuracy``.
    per_class : DataFrame
        ``model``, ``strategy``, ``class``, ``n``, ``accuracy``.
    probes : DataFrame or None
        ``model``, ``layer``, ``mean_test_score``, ``std_test_score``: a linear probe of
        the language stage, cross-validated on the held-out images, at each
        layer.
    meta : dict
        What was compared and how.
    """

    _plot_size = (4.8, 3.6)

    def __init__(self, accuracy, per_class, probes=None, meta=None):
        self.accuracy = accuracy
        self.per_class = per_class
        self.probes = probes
        self.meta = dict(meta or {})

    def __repr__(self):
        return f"TuningReport({self.meta.get('base')!r} -> {self.meta.get('tuned')!r})"

    # -- text ------------------------------------------------------------------------
    def accuracy_table(self):
        """Strategies as rows, base and tuned accuracy as columns."""
        table = self.accuracy.pivot(
            index="strategy", columns="model", values="accuracy"
        )
        order = list(dict.fromkeys(self.accuracy["strategy"]))
        return table.reindex(order)[[c for c in ("base", "tuned") if c in table]]

    def per_class_table(self):
        """Classes as rows, one column per (model, strategy)."""
        table = self.per_class.pivot_table(
            index="class", columns=["strategy", "model"], values="accuracy", sort=False
        )
        return table

    def to_text(self):
        """The accuracy per strategy, per class and (when probed) per layer.

        Returns
        -------
        text : str
        """
        parts = [
            "accuracy on held-out images",
            self.accuracy_table().to_string(
                float_format=lambda v: f"{v:.3f}", na_rep="-"
            ),
        ]
        parts += [
            "",
            "per class",
            self.per_class_table().to_string(
                float_format=lambda v: f"{v:.2f}", na_rep="-"
            ),
        ]
        if self.probes is not None:
            curve = self.probes.pivot(
                index="layer", columns="model", values="mean_test_score"
            )
            pooling = self.meta.get("probe_pooling")
            parts += [
                "",
                f"linear probe, language stage, {pooling} pooling",
                curve.to_string(float_format=lambda v: f"{v:.3f}"),
            ]
        return "\n".join(parts)

    # -- plot --------------------------------------------------------------------------
    def to_frame(self):
        """The held-out accuracy: one row per (model, strategy)."""
        return self.accuracy.copy()

    def _title(self):
        return f"{self.meta.get('base')}: before and after fine-tuning"

    def _caption(self):
        text = "Bars: held-out accuracy of each strategy, base and tuned model."
        if self.probes is not None:
            text += (
                " Lines: mean probe accuracy over folds at each language layer; the "
                "shaded band is ± 1 std over folds."
            )
        return text

    def _panels(self):
        return (2 if self.probes is not None else 1), None

    def plot(self, ax=None):
        """Accuracy per strategy (bars) and the probe curve of both models.

        Parameters
        ----------
        ax : matplotlib Axes, sequence of Axes or None, default=None
            One Axes per panel (two when probed); None makes a new figure.

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        fig = super().plot(ax)
        if ax is None:
            fig.suptitle(self._title())
        return fig

    def _draw(self, axes):
        table = self.accuracy_table()
        x = np.arange(len(table))
        for k, model in enumerate(table.columns):
            axes[0].bar(
                x + (k - 0.5) * 0.38, table[model].to_numpy(), 0.38, label=model
            )
        axes[0].set_xticks(x, table.index, rotation=20)
        axes[0].set_ylim(0, 1.05)
        axes[0].set_ylabel("held-out accuracy")
        axes[0].set_title("classification strategies")
        axes[0].legend(fontsize="small")
        axes[0].grid(axis="y", alpha=0.3)
        if self.probes is not None:
            ax = axes[1]
            for model, line in self.probes.groupby("model", sort=False):
                line = line.sort_values("layer")
                x, m = line["layer"], line["mean_test_score"]
                s = line["std_test_score"]
                (handle,) = ax.plot(x, m, marker="o", ms=4, label=model)
                ax.fill_between(x, m - s, m + s, alpha=0.2, color=handle.get_color())
            ax.set_xticks(sorted(self.probes["layer"].unique()))
            ax.set_xlabel("language layer")
            ax.set_ylabel(f"probe accuracy ({self.meta.get('probe_cv')}-fold)")
            ax.set_title(f"linear probe, {self.meta.get('probe_pooling')} token")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", loc="lower right")

    # -- files ---------------------------------------------------------------------------
    def to_html(self, path=None, *, png=None):
        """A self-contained HTML page (the plot embedded as a base64 PNG).

        Parameters
        ----------
        path : str, Path or None, default=None
            Where to write it; None only returns the text.

        Returns
        -------
        html : str
        """
        png = base64.b64encode(png or self._png()).decode("ascii")
        settings = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.meta.items()
        )
        fmt = {"float_format": lambda v: f"{v:.3f}", "na_rep": "-"}
        probes = ""
        if self.probes is not None:
            curve = self.probes.pivot(
                index="layer", columns="model", values="mean_test_score"
            )
            probes = "<h2>Linear probe per layer</h2>" + curve.to_html(**fmt)
        page = _PAGE.format(
            title=html.escape(f"Fine-tuning report: {self.meta.get('base', '')}"),
            png=png,
            accuracy=self.accuracy_table().to_html(**fmt),
            per_class=self.per_class_table().to_html(**fmt),
            probes=probes,
            settings=settings,
        )
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def save(self, folder):
        """Write accuracy.csv, per_class.csv, probes.csv, report.json, tuning.png
        and report.html.

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
            "accuracy": folder / "accuracy.csv",
            "per_class": folder / "per_class.csv",
            "json": folder / "report.json",
            "png": folder / "tuning.png",
            "html": folder / "report.html",
        }
        self.accuracy.to_csv(paths["accuracy"], index=False)
        self.per_class.to_csv(paths["per_class"], index=False)
        payload = {
            "meta": self.meta,
            "accuracy": json.loads(self.accuracy.to_json(orient="records")),
        }
        if self.probes is not None:
            paths["probes"] = folder / "probes.csv"
            self.probes.to_csv(paths["probes"], index=False)
            payload["probes"] = json.loads(self.probes.to_json(orient="records"))
        paths["json"].write_text(json.dumps(payload, indent=2, default=str) + "\n")
        png = self._png()
        paths["png"].write_bytes(png)
        self.to_html(paths["html"], png=png)
        return paths


def compare_models(
    tuner,
    X_train,
    y_train,
    X_test,
    y_test,
    *,
    strategies=("probabilistic", "open_ended", "closed_set"),
    probe=True,
    probe_pooling="last",
    cv=3,
    max_new_tokens=16,
    batch_size=8,
    device="auto",
    progress=False,
    random_state=0,
):
    """Score the base model and a fitted tuner's model the same ways.

    Each strategy runs a :class:`VLMGenerativeClassifier` on the base model and
    on ``tuner.model_path_`` with the tuner's prompt, class names and answer
    prefix, fitted on the training images and scored on the held-out ones; a
    ``cross_entropy`` tuner adds its head. With ``probe``, ``probe_layers``
    cross-validates a linear probe at every language layer of both models, on
    the held-out images (the tuned model has seen the training ones).

    Returns
    -------
    report : TuningReport
    """
    names = dict(zip(tuner.classes_, tuner.class_names_, strict=True))
    prefix = tuner.answer_template.split("{}")[0].rstrip()
    models = {"base": tuner.model, "tuned": tuner.model_path_}
    y_test = np.asarray(y_test)
    accuracy, per_class = [], []

    def record(model, strategy, pred):
        accuracy.append(
            {
                "model": model,
                "strategy": strategy,
                "accuracy": float(np.mean(pred == y_test)),
            }
        )
        for label, name in names.items():
            mask = y_test == label
            per_class.append(
                {
                    "model": model,
                    "strategy": strategy,
                    "class": name,
                    "n": int(mask.sum()),
                    "accuracy": float(np.mean(pred[mask] == label))
                    if mask.any()
                    else np.nan,
                }
            )

    for strategy in strategies:
        for model, path in models.items():
            clf = VLMGenerativeClassifier(
                path,
                class_names=names,
                strategy=strategy,
                prompt=tuner.prompt,
                answer_prefix=prefix,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                device=device,
                verbose=int(bool(progress)),
                random_state=random_state,
            )
            record(model, strategy, clf.fit(X_train, y_train).predict(X_test))
    if tuner.objective == "cross_entropy":
        head = copy.copy(tuner).set_params(strategy="head")  # the fitted head
        record("tuned", "head", head.predict(X_test))
    probes = None
    if probe:
        frames = []
        for model, path in models.items():
            vlm = VLMEmbeddingTransformer(
                path, prompt=tuner.prompt, batch_size=batch_size, device=device
            ).set_params(**_verbosity(progress))
            report = probe_layers(
                vlm,
                X_test,
                y_test,
                stages=["language"],
                poolings=[probe_pooling],
                probe=default_probe(),
                cv=cv,
                random_state=random_state,
            )
            frame = report.results[
                ["param_layer", "mean_test_score", "std_test_score"]
            ].rename(columns=lambda c: c.removeprefix("param_"))
            frame.insert(0, "model", model)
            frames.append(frame)
        probes = pd.concat(frames, ignore_index=True)
    meta = {
        "base": str(tuner.model),
        "tuned": tuner.model_path_,
        "objective": tuner.objective,
        "train": tuner.train,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "n_classes": len(names),
        "steps": tuner.n_steps_,
        "final_loss": tuner.history_[-1]["loss"] if tuner.history_ else None,
        "probe_pooling": probe_pooling if probe else None,
        "probe_cv": cv if probe else None,
    }
    return TuningReport(pd.DataFrame(accuracy), pd.DataFrame(per_class), probes, meta)


def _verbosity(progress):
    names = VLMEmbeddingTransformer().get_params()
    return {"verbose": int(progress)} if "verbose" in names else {"progress": progress}


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
<img alt="accuracy before and after fine-tuning" src="data:image/png;base64,{png}">
<h2>Held-out accuracy per strategy</h2>
{accuracy}
<h2>Per class</h2>
{per_class}
{probes}
<h2>Settings</h2><table>{settings}</table>
<p>Written by skvlm tune.</p>
</body></html>
"""
