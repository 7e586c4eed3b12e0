"""Draw the figures of the similarity, text and module-site guide pages.

- docs/_static/site_similarity_tiny_llava.png: linear CKA between sites of the
  shipped tiny LLaVA (vision, projector and language stages) over 200 digits.
- docs/_static/zero_shot_templates.png: zero-shot accuracy of the shipped tiny
  CLIP on 500 digits with one template, the 80 OpenAI ImageNet templates, and
  per-class descriptions.
- docs/_static/module_sites.png: 5-fold linear-probe accuracy of the tiny
  LLaVA's attention and MLP outputs and block outputs, layer by layer.

Run: ``python benchmarks/make_analysis_figures.py`` (about a minute on 2 CPUs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skvlm import FeatureStore, VLMEmbeddingTransformer  # noqa: E402
from skvlm.analysis import site_similarity  # noqa: E402
from skvlm.classifiers import CLIPZeroShotClassifier  # noqa: E402
from skvlm.datasets import load_digit_images  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "docs" / "_static"

DESCRIPTIONS = {
    "zero": ["a round digit zero.", "the digit zero, an oval."],
    "one": ["a thin digit one.", "the digit one, a vertical line."],
    "two": ["the digit two, with a curve and a flat base."],
    "three": ["the digit three, two bumps on the right."],
    "four": ["the digit four, with a cross bar."],
    "five": ["the digit five, with a flat top."],
    "six": ["the digit six, with a loop at the bottom."],
    "seven": ["the digit seven, a top bar and a slant."],
    "eight": ["the digit eight, two loops."],
    "nine": ["the digit nine, with a loop at the top."],
}


def similarity_figure(digits, store):
    vlm = VLMEmbeddingTransformer("skvlm/tiny-llava", cache=store)
    sites = [
        "vision/l0/mean", "vision/l1/mean", "vision/l2/mean", "vision/l3/mean",
        "vision/l3/cls", "projector/l0/mean",
        "language/l0/image_mean", "language/l1/image_mean",
        "language/l2/image_mean", "language/l3/image_mean", "language/l3/last",
    ]  # fmt: skip
    result = site_similarity(vlm, digits.images, sites)
    fig, ax = plt.subplots(figsize=(8.5, 7))
    result.plot(ax=ax)
    ax.set_title("linear CKA between sites of skvlm/tiny-llava (200 digits)")
    fig.tight_layout()
    fig.savefig(STATIC / "site_similarity_tiny_llava.png", dpi=110)
    plt.close(fig)
    return result


def zero_shot_figure(digits):
    names = list(digits.target_names)
    settings = {
        "one template\n'a photo of the digit {}.'": {
            "templates": ["a photo of the digit {}."]
        },
        "80 OpenAI ImageNet\ntemplates": {"templates": "openai_imagenet"},
        "one template +\ndescriptions (CuPL)": {
            "templates": ["a photo of the digit {}."],
            "class_descriptions": DESCRIPTIONS,
        },
    }
    scores = {}
    for label, kwargs in settings.items():
        clf = CLIPZeroShotClassifier("skvlm/tiny-clip", class_names=names, **kwargs)
        clf.fit(digits.images, digits.target)
        scores[label] = clf.score(digits.images, digits.target)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(
        list(scores), list(scores.values()), color=["#4c72b0", "#dd8452", "#55a868"]
    )
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("zero-shot accuracy")
    ax.set_title(f"skvlm/tiny-clip on {len(digits.target)} digits (variation 0.5)")
    fig.tight_layout()
    fig.savefig(STATIC / "zero_shot_templates.png", dpi=110)
    plt.close(fig)
    return scores


def module_figure(digits, store):
    kinds = {"attention output": "self_attn", "MLP output": "mlp", "block output": ""}
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    curves = {}
    for label, part in kinds.items():
        pattern = f"*language_model.layers.?{'.' + part if part else ''}"
        vlm = VLMEmbeddingTransformer(
            "skvlm/tiny-llava", stage="language", module=pattern,
            pooling="image_mean", cache=store,
        ).fit()  # fmt: skip
        X = vlm.transform(digits.images)
        ends = np.cumsum([0, *vlm.layer_widths_])
        curves[label] = [
            cross_val_score(probe, X[:, a:b], digits.target, cv=5).mean()
            for a, b in zip(ends[:-1], ends[1:], strict=True)
        ]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", label=label)
    ax.set_xticks(range(len(values)))
    ax.set_xlabel("decoder block of the language model")
    ax.set_ylabel("5-fold probe accuracy")
    ax.set_title("module sites of skvlm/tiny-llava, image_mean pooling")
    ax.legend()
    fig.tight_layout()
    fig.savefig(STATIC / "module_sites.png", dpi=110)
    plt.close(fig)
    return curves


def main():
    with tempfile.TemporaryDirectory() as folder:
        store = FeatureStore(folder, keep="all")
        digits = load_digit_images(n_per_class=20, variation=0.5, random_state=0)
        result = similarity_figure(digits, store)
        print(result.to_frame().round(2))
        print(module_figure(digits, store))
    digits = load_digit_images(n_per_class=50, variation=0.5, random_state=0)
    print(zero_shot_figure(digits))


if __name__ == "__main__":
    main()
