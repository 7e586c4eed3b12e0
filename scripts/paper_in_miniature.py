"""The analysis of Zhang et al. (NeurIPS 2024) in miniature, on skvlm's embedded models.

Runs, on the digit images held out from the embedded models' training (the
450-image test split of ``scripts/train_embedded_models.py``), rendered clean
and with augmentation (``variation=0.5``):

- CLIP zero-shot with ``skvlm/tiny-clip``;
- the generative classifier's strategies with ``skvlm/tiny-llava``: open-ended
  generation, probabilistic sum, mean, and mean with calibration;
- linear probes (5-fold cross-validation on the held-out images) on the
  generative model's language layers (``probe_layers(..., stages=["language"])``)
  and on CLIP's projected embedding;

prints the comparison table (the paper's Tables 1-3 in one) and writes the
language-layer plot to ``docs/_static/paper_miniature_layers.png``.

Usage: ``python scripts/paper_in_miniature.py [--n-images N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from skvlm.classifiers import CLIPZeroShotClassifier
from skvlm.datasets import load_digit_images
from skvlm.probing import probe_layers

ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "_static" / "paper_miniature_layers.png"
CLIP, LLAVA = "skvlm/tiny-clip", "skvlm/tiny-llava"


def held_out(variation, n_images):
    """The held-out test digits (the training script's split), rendered."""
    digits = load_digit_images(variation=variation, random_state=123)
    _, test = train_test_split(
        np.arange(len(digits.target)),
        test_size=0.25,
        stratify=digits.target,
        random_state=0,
    )
    test = np.sort(test)[:n_images] if n_images else np.sort(test)
    images = [digits.images[i] for i in test]
    return images, digits.target[test], list(digits.target_names)


def generative_rows(images, y, names):
    """Accuracy of each strategy of VLMGenerativeClassifier (if it is available)."""
    try:
        from skvlm.classifiers import VLMGenerativeClassifier
    except ImportError:
        return {"generative classifier (not available in this build)": np.nan}
    strategies = {
        "LLaVA open-ended": dict(strategy="open_ended", max_new_tokens=12),
        "LLaVA probabilistic, sum": dict(reduction="sum"),
        "LLaVA probabilistic, mean": dict(reduction="mean"),
        "LLaVA probabilistic, mean + calibration": dict(
            reduction="mean", calibration="prior"
        ),
    }
    rows = {}
    for label, params in strategies.items():
        clf = VLMGenerativeClassifier(LLAVA, class_names=names, **params)
        # fit trains nothing; with calibration it estimates each class's prior
        # as its mean score over these (unlabelled use of the) images.
        rows[label] = clf.fit(images, y).score(images, y)
    return rows


def evaluate(variation, n_images, cache):
    images, y, names = held_out(variation, n_images)
    rows = {}
    clip = CLIPZeroShotClassifier(
        CLIP, class_names=names, templates=["a photo of the digit {}."], cache=cache
    )
    rows["CLIP zero-shot"] = clip.fit(images, y).score(images, y)
    rows.update(generative_rows(images, y, names))
    lang = probe_layers(
        LLAVA,
        images,
        y,
        stages=["language"],
        cv=5,
        random_state=0,
        cache=cache,
    )
    r = lang.results
    last = r["layer"].max()
    for pooling, label in [("last", "last token"), ("mean", "mean token")]:
        site = r[(r["layer"] == last) & (r["pooling"] == pooling)]
        rows[f"LLaVA probe, last layer, {label}"] = site["mean_score"].item()
    rows["LLaVA probe, best language site"] = lang.best_["mean_score"]
    clip_probe = probe_layers(
        CLIP, images, y, stages=["projector"], cv=5, random_state=0, cache=cache
    )
    rows["CLIP linear probe (projected embedding)"] = clip_probe.best_["mean_score"]
    return rows, lang


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=0, help="0: all 450")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from skvlm import FeatureStore

    cache = FeatureStore()
    started = time.perf_counter()
    columns, reports = {}, {}
    for variation, title in [(0.0, "clean"), (0.5, "augmented")]:
        rows, reports[title] = evaluate(variation, args.n_images, cache)
        columns[title] = rows
    table = pd.DataFrame(columns) * 100
    table.index.name = "method (accuracy %)"
    with pd.option_context("display.width", 120):
        print(table.round(1).to_string())
    for title, report in reports.items():
        best = report.best_params_
        print(f"best language site, {title}: layer {best['layer']}, {best['pooling']}")
    print(f"{time.perf_counter() - started:.0f} s in all.")
    print("\nLanguage-stage probes, augmented images:")
    print(reports["augmented"].to_text())
    if not args.no_plot:
        fig = reports["augmented"].plot(
            title="tiny-llava language layers, augmented held-out digits"
        )
        PLOT.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(PLOT, dpi=110, bbox_inches="tight")
        print(f"plot: {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
