"""Draw docs/_static/spatial_importance.png: spatial maps on a planted-signal task.

The class of each 32x32 noise image is the brightness of one 8x8 patch (row 1,
column 2 of the 4x4 patch grid of a tiny random-init CLIP). Three maps are drawn
over one image of class 0: token permutation at layer 0 with mean pooling, the
class-1 map of the same run, and occlusion for a probe on the last layer's CLS
token (which never reads patch tokens directly).

Run: ``python benchmarks/make_spatial_figure.py``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from skvlm import VLMEmbeddingTransformer  # noqa: E402
from skvlm.inspection import plot_spatial_importance, spatial_importance  # noqa: E402
from skvlm.testing import make_tiny_clip  # noqa: E402

PATCH = (1, 2)
OUT = (
    Path(__file__).resolve().parents[1] / "docs" / "_static" / "spatial_importance.png"
)


def planted_images(n, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = []
    for label in y:
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        low, high = (160, 256) if label else (0, 96)
        r, c = PATCH
        pixels[r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8] = rng.integers(
            low, high, (8, 8, 3)
        )
        images.append(Image.fromarray(pixels))
    return images, y


def probe(path, layer, pooling, images, y):
    return make_pipeline(
        VLMEmbeddingTransformer(path, layer=layer, pooling=pooling),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    ).fit(images, y)


def main():
    path = make_tiny_clip(tempfile.mkdtemp(), seed=0)
    images, y = planted_images(60)
    tokens = spatial_importance(
        probe(path, 0, "mean", images, y), images, y, n_repeats=5, random_state=0
    )
    occluded = spatial_importance(probe(path, -1, "cls", images, y), images, y)
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    # a class-0 image: its planted patch is dark, so the bright cell is the map
    shown = images[int(np.flatnonzero(y == 0)[0])]
    panels = [
        (tokens.importances_mean, "permute, layer 0, mean pooling\n(accuracy drop)"),
        (tokens.class_maps[0], "same run, class 0\n(drop in P(true class))"),
        (
            occluded.importances_mean,
            "occlude, last layer, cls pooling\n(accuracy drop)",
        ),
    ]
    for ax, (values, title) in zip(axes, panels, strict=True):
        plot_spatial_importance(shown, values, ax=ax, title=title, alpha=0.6)
    figure.suptitle(
        f"The class is the brightness of patch {PATCH} (row, column); "
        "tiny random-init CLIP, 60 images"
    )
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")
    for name, values in [
        ("permute", tokens.importances_mean),
        ("occlude", occluded.importances_mean),
    ]:
        print(name, "map (accuracy drop):")
        print(np.array2string(values, precision=3))


if __name__ == "__main__":
    main()
