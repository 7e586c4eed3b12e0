"""
Which layer holds the class? A layer sweep
==========================================

``probe_layers`` runs each image through the model once per stage, keeps every
layer and pooling of that pass in a feature store, and cross-validates a linear
probe on each site. Here: every layer of the tiny LLaVA's vision tower and of
its language model, mean-pooled, on 60 digit images.
"""

# %%
import io

import matplotlib.pyplot as plt

from skvlm import VLMEmbeddingTransformer, probe_layers
from skvlm.datasets import load_digit_images

digits = load_digit_images(n_per_class=6, variation=0.3, random_state=0)
report = probe_layers(
    VLMEmbeddingTransformer("skvlm/tiny-llava", device="cpu", verbose=0),
    digits.images,
    digits.target,
    stages=("vision", "language"),
    poolings=("mean",),
    cv=3,
    random_state=0,
)
print(report.best_params_)

# %%
# One row per site (stage, layer, pooling), with the cross-validated accuracy:
report.results[
    ["param_stage", "param_layer", "param_pooling", "mean_test_score", "std_test_score"]
]

# %%
# The sweep as a plot: accuracy against depth, one line per stage and pooling.
# ``report.plot()`` returns a Figure that pyplot does not manage (safe in scripts
# and servers: ``fig.savefig("sweep.png")``); here it is drawn into a pyplot
# figure so that the page shows it.
fig = report.plot()
png = io.BytesIO()
fig.savefig(png, format="png", dpi=120)
png.seek(0)
shown = plt.figure(figsize=fig.get_size_inches())
plt.imshow(plt.imread(png))
plt.axis("off")
plt.show()
