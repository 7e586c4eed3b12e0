"""
Where does the probe look? Spatial importance maps
==================================================

A linear probe on the tiny CLIP's vision tower, then
``spatial_importance``: each patch position's tokens are permuted across
images and the drop in the probe's accuracy is that patch's importance. One
map per class, drawn over an image of that class.
"""

# %%
import matplotlib.pyplot as plt
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm import VLMEmbeddingTransformer
from skvlm.datasets import load_digit_images
from skvlm.inspection import plot_spatial_importance, spatial_importance

digits = load_digit_images(n_class=4, n_per_class=20, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(
    digits.images,
    digits.target,
    test_size=0.5,
    stratify=digits.target,
    random_state=0,
)
pipe = make_pipeline(
    VLMEmbeddingTransformer(
        "skvlm/tiny-clip", stage="vision", layer=2, pooling="mean", device="cpu"
    ),
    StandardScaler(),
    LogisticRegression(max_iter=1000),
).fit(X_train, y_train)
print(f"probe accuracy: {pipe.score(X_test, y_test):.2f}")

# %%
result = spatial_importance(pipe, X_test, y_test, n_repeats=3, random_state=0)
result.importances_mean.round(3)  # (rows, cols) of the 4x4 patch grid

# %%
# One map per class, over the first test image of that class.
for k, name in enumerate(digits.target_names[:4]):
    image = X_test[list(y_test).index(k)]
    fig = plot_spatial_importance(image, result.class_maps[k])
    fig.suptitle(f"class {name!r}")
plt.show()
