"""Random test images of varied sizes, modes kept simple (RGB)."""

from __future__ import annotations

import numpy as np

SIZES = ((40, 50), (30, 64), (64, 20), (33, 33))


def random_images(n, *, seed=0, sizes=SIZES):
    """``n`` random RGB PIL images cycling through ``sizes`` (height, width).

    Varied aspect ratios exercise resizing, cropping and padding paths.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int, default=0
        Seed of the pixel values.
    sizes : sequence of (int, int)
        Heights and widths to cycle through.

    Returns
    -------
    images : list of PIL.Image.Image

    Examples
    --------
    >>> from skvlm.testing import random_images
    >>> [im.size for im in random_images(2)]
    [(50, 40), (64, 30)]
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return images
