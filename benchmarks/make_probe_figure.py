"""The layer sweep with its control line and interval band, for the docs.

``probe_layers`` over the language stage of the shipped tiny LLaVA on 200 digit
images (20 per class), 5 folds, poolings ``last``, ``mean`` and
``image_mean``, with ``control="shuffled"`` and ``ci=0.95``; writes
``docs/_static/probe_layers_control.png`` and prints the table.

Run (from the repository root): python benchmarks/make_probe_figure.py
"""

from __future__ import annotations

from pathlib import Path

from skvlm import VLMEmbeddingTransformer, probe_layers
from skvlm.datasets import load_digit_images

OUT = Path(__file__).resolve().parents[1] / "docs" / "_static"


def main():
    digits = load_digit_images(n_per_class=20, variation=0.5, random_state=0)
    report = probe_layers(
        VLMEmbeddingTransformer("skvlm/tiny-llava"),
        digits.images,
        digits.target,
        stages="language",
        poolings=["last", "mean", "image_mean"],
        cv=5,
        control="shuffled",
        ci=0.95,
        random_state=0,
    )
    print(report.to_text())
    fig = report.plot(title="Tiny LLaVA, language stage: probe vs control task")
    path = OUT / "probe_layers_control.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
