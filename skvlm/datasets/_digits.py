"""scikit-learn's 8x8 handwritten digits rendered as RGB PIL images."""

import numbers

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.utils import check_random_state

from .._sklearn_compat import Interval, validate_params
from ._base import _check_int, _finish

DIGIT_NAMES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
_DIGITS_DESCR = """\
Handwritten digits rendered as RGB images
-----------------------------------------

scikit-learn's bundled optical-recognition digits (1797 images of 8x8 pixels,
16 grey levels, 10 classes of about 180 images each; see
``sklearn.datasets.load_digits``), upsampled to {size}x{size} pixels with a
separable bicubic filter and drawn as a {fg} digit on a {bg} background.
variation={variation} (0 = clean images; up to 1 = random rotation up to
25 degrees, zoom of +-15 %, shift up to 12 % of the side, colour tint and
Gaussian noise, drawn from random_state={random_state}).
Classes: {names}.
"""

# Augmentation strength at variation=1 (each term is scaled linearly by variation).
_MAX_ANGLE = 25.0  # degrees
_MAX_ZOOM = 0.15  # relative
_MAX_SHIFT = 0.12  # fraction of the side
_MAX_TINT = 0.6  # how far the digit colour moves from white towards a random colour
_MAX_BACKGROUND = 0.35  # brightest background channel, as a fraction of 255
_MAX_NOISE = 12.0  # Gaussian noise std in grey levels
_CHUNK_PIXELS = 2_000_000  # pixels rendered at once: bounds memory at large sizes


@validate_params(
    {
        "size": [Interval(numbers.Integral, 1, None, closed="left")],
        "variation": [Interval(numbers.Real, 0, 1, closed="both")],
        "n_class": [Interval(numbers.Integral, 1, 10, closed="both")],
        "n_per_class": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "invert": ["boolean"],
        "random_state": ["random_state"],
        "caption_template": [str],
        "return_X_y": ["boolean"],
        "as_frame": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_digit_images(
    *,
    size=32,
    variation=0.0,
    n_class=10,
    n_per_class=None,
    invert=False,
    random_state=0,
    caption_template="a photo of the digit {}",
    return_X_y=False,
    as_frame=False,
):
    """Render scikit-learn's handwritten digits as RGB PIL images.

    The 8x8 images of ``sklearn.datasets.load_digits`` are upsampled with a
    separable bicubic filter (the same as PIL's ``Image.resize(...,
    Image.BICUBIC)``) and drawn white on black (black on white with
    ``invert=True``). No file is read or written; all 1797 images at 32 px render
    in a fraction of a second.

    Parameters
    ----------
    size : int, default=32
        Side of the square output images, in pixels.
    variation : float in [0, 1], default=0.0
        Strength of a random augmentation that makes the task harder: rotation
        (up to 25 degrees at 1), zoom (up to 15 %), shift (up to 12 % of the
        side), colour tint of digit and background, and Gaussian noise (std up to
        12 grey levels). 0 gives the clean rendering, whatever ``random_state``.
    n_class : int in [1, 10], default=10
        Keep the digits ``0 .. n_class - 1``, as in ``load_digits``.
    n_per_class : int or None, default=None
        Keep the first ``n_per_class`` images of each class (in the order of
        ``load_digits``); None keeps them all (174 to 183 per class).
    invert : bool, default=False
        Draw black digits on a white background.
    random_state : int, RandomState instance or None, default=0
        Seeds the augmentation; the same value gives the same images.
    caption_template : str, default="a photo of the digit {}"
        Format string for ``captions``, filled with the class name.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=False
        ``data`` becomes a DataFrame with an ``image`` column (the input form
        ``VLMEmbeddingTransformer`` takes), ``target`` a Series, and ``frame``
        holds the columns ``image``, ``caption`` and ``target``.

    Returns
    -------
    data : Bunch
        ``images`` (list of RGB PIL images; ``data`` is the same list, or the
        ``image`` DataFrame with ``as_frame=True``), ``target`` (int array),
        ``target_names`` (``"zero"`` ... ``"nine"``), ``captions`` (one string
        per image, such as ``"a photo of the digit three"``), ``frame`` (or
        None) and ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from skvlm.datasets import load_digit_images
    >>> digits = load_digit_images(size=24, n_per_class=5)
    >>> len(digits.images), digits.images[0].size, digits.images[0].mode
    (50, (24, 24), 'RGB')
    >>> digits.target[:6]
    array([0, 0, 0, 0, 0, 1])
    >>> digits.target_names[digits.target[7]], digits.captions[7]
    ('one', 'a photo of the digit one')
    >>> X, y = load_digit_images(variation=0.5, n_class=3, return_X_y=True,
    ...                          as_frame=True)
    >>> X.shape, y.value_counts().sort_index().tolist()
    ((537, 1), [178, 182, 177])
    """
    size = _check_int(size, "size", low=1)
    n_class = _check_int(n_class, "n_class", low=1, high=10)
    if (
        isinstance(variation, bool)
        or not isinstance(variation, numbers.Real)
        or not 0.0 <= variation <= 1.0
    ):
        raise ValueError(f"variation must be a float in [0, 1]; got {variation!r}.")
    digits = load_digits(n_class=n_class)
    index = np.arange(len(digits.target))
    if n_per_class is not None:
        most = int(np.bincount(digits.target).min())
        n_per_class = _check_int(n_per_class, "n_per_class", low=1, high=most)
        index = np.concatenate(
            [np.flatnonzero(digits.target == k)[:n_per_class] for k in range(n_class)]
        )
    grey = digits.images[index].astype(np.float32) / 16.0
    target = digits.target[index].astype(np.int64)
    rng = check_random_state(random_state)
    images = []
    chunk = max(1, _CHUNK_PIXELS // size**2)
    for start in range(0, len(grey), chunk):
        images.extend(
            _render(grey[start : start + chunk], size, variation, invert, rng)
        )
    names = np.array(DIGIT_NAMES[:n_class], dtype=object)
    captions = [caption_template.format(names[k]) for k in target]
    descr = _DIGITS_DESCR.format(
        size=size,
        variation=variation,
        random_state=random_state,
        fg="black" if invert else "white",
        bg="white" if invert else "black",
        names=", ".join(names),
    )
    return _finish(
        images,
        target,
        names,
        descr,
        return_X_y,
        as_frame,
        key="images",
        captions=captions,
    )


def _render(grey, size, variation, invert, rng):
    """Upsample (n, 8, 8) floats in [0, 1] to a list of (size, size) RGB images."""
    resize = _bicubic_matrix(8, size)
    big = np.clip(resize @ grey @ resize.T, 0.0, 1.0)
    if variation == 0:
        rgb = np.repeat(big[..., None] * np.float32(255.0), 3, axis=-1)
    else:
        n = len(big)
        angle = rng.uniform(-1, 1, n) * _MAX_ANGLE * variation
        zoom = 1.0 + rng.uniform(-1, 1, n) * _MAX_ZOOM * variation
        shift = rng.uniform(-1, 1, (n, 2)) * _MAX_SHIFT * variation * size
        tint = rng.uniform(0, 1, (n, 3)) * _MAX_TINT * variation
        background = rng.uniform(0, 1, (n, 3)) * _MAX_BACKGROUND * variation
        big = np.stack(
            [
                _affine(b, a, z, s)
                for b, a, z, s in zip(big, angle, zoom, shift, strict=True)
            ]
        )
        low = (background * 255.0).astype(np.float32)[:, None, None, :]
        span = ((1.0 - tint - background) * 255.0).astype(np.float32)
        rgb = big[..., None] * span[:, None, None, :]
        rgb += low
        rgb += rng.normal(0.0, _MAX_NOISE * variation, rgb.shape).astype(np.float32)
    if invert:
        np.subtract(np.float32(255.0), rgb, out=rgb)
    np.clip(np.rint(rgb, out=rgb), 0, 255, out=rgb)
    return [Image.fromarray(img, "RGB") for img in rgb.astype(np.uint8)]


def _bicubic_matrix(n_in, n_out):
    """(n_out, n_in) matrix applying PIL's 1-D bicubic resize to a vector.

    PIL resizes separably, so ``M @ image @ M.T`` equals ``Image.resize`` on a
    float image while doing all images of a chunk in one product.
    """
    eye = np.eye(n_in, dtype=np.float32)
    cols = [
        np.asarray(
            Image.fromarray(row[None, :], "F").resize(
                (n_out, 1), Image.Resampling.BICUBIC
            )
        )[0]
        for row in eye
    ]
    return np.stack(cols, axis=1)


def _affine(img, angle, zoom, shift):
    """Rotate by ``angle`` degrees and zoom about the centre, then shift (pixels)."""
    side = img.shape[0]
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta) / zoom, np.sin(theta) / zoom
    centre = side / 2.0
    # PIL's AFFINE maps each output pixel back to an input pixel, so give the inverse.
    ox, oy = centre + shift[0], centre + shift[1]
    coeffs = (
        cos,
        sin,
        centre - cos * ox - sin * oy,
        -sin,
        cos,
        centre + sin * ox - cos * oy,
    )
    out = Image.fromarray(img.astype(np.float32), "F").transform(
        (side, side),
        Image.Transform.AFFINE,
        coeffs,
        resample=Image.Resampling.BILINEAR,
        fillcolor=0.0,
    )
    return np.asarray(out)
