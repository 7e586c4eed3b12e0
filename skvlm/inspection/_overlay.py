"""Overlay a spatial importance map on its image, as a matplotlib figure."""

from __future__ import annotations

from numbers import Real

import numpy as np

from .._inputs import load_image
from .._sklearn_compat import HasMethods, Interval, validate_params


@validate_params(
    {
        "image": "no_validation",  # any image form, checked by load_image
        "importance_map": ["array-like"],
        "ax": [HasMethods(["imshow"]), None],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "cmap": "no_validation",  # a name or a matplotlib Colormap
        "title": [str, None],
        "colorbar": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def plot_spatial_importance(
    image,
    importance_map,
    *,
    ax=None,
    alpha=0.5,
    cmap="magma",
    title=None,
    colorbar=True,
):
    """Draw ``importance_map`` (a patch grid) over ``image``.

    The map is stretched over the whole image, one cell per patch, without
    interpolation, so each cell covers the pixels of its patch. Models whose
    processor center-crops see only the crop: pass the cropped (square) image
    for the cells to line up with what the model saw.

    Parameters
    ----------
    image : path, PIL image, array or bytes
        Any image ``VLMEmbeddingTransformer`` accepts.
    importance_map : array-like of shape (rows, cols)
        For example ``spatial_importance(...).importances_mean`` or one of its
        ``image_maps`` / ``class_maps``.
    ax : matplotlib Axes, default=None
        Where to draw; None makes a new figure.
    alpha : float, default=0.5
        Opacity of the map.
    cmap : str, default="magma"
        Colour map of the map.
    title : str, default=None
        Axes title.
    colorbar : bool, default=True
        Add a colour bar for the map.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.inspection import plot_spatial_importance
    >>> from skvlm.testing import random_images
    >>> fig = plot_spatial_importance(random_images(1)[0], np.eye(4))
    >>> type(fig).__name__
    'Figure'
    >>> import matplotlib.pyplot as plt
    >>> plt.close(fig)
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_spatial_importance needs matplotlib: pip install skvlm[plot]"
        ) from error
    values = np.asarray(importance_map, dtype=float)
    if values.ndim != 2:
        raise ValueError(
            f"importance_map must be 2-D (rows, cols) like the patch grid, got "
            f"shape {values.shape}; reshape it or pick one image's map."
        )
    picture = load_image(image)
    if ax is None:
        figure, ax = plt.subplots(figsize=(4, 4))
    else:
        figure = ax.figure
    width, height = picture.size
    ax.imshow(picture, extent=(0, width, height, 0))
    shown = ax.imshow(
        values,
        extent=(0, width, height, 0),
        interpolation="nearest",
        alpha=alpha,
        cmap=cmap,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    if colorbar:
        figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    return figure
