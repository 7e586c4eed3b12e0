"""Images in any accepted form -> validated RGB PIL images, and their content keys.

Validation of the container happens up front (cheap); decoding happens one batch
at a time, so a transform never holds more decoded images than a batch.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

ACCEPTED = (
    "file paths (str or pathlib.Path), PIL images, numpy arrays (HxW or HxWx1/3/4; "
    "uint8, or float in [0, 1]) or raw bytes"
)


class ImageInputMixin:
    """Declares in sklearn's tags that X holds images, not a numeric matrix.

    sklearn's common checks and meta-estimators read these tags; every skvlm
    estimator that runs a VLM on X puts this mixin first among its bases.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        return tags


class ImageLoadError(ValueError):
    """An item of X could not be turned into an RGB image.

    The message names the item's index (and path), the problem and the fix.
    ``index`` holds the position of the item in X.
    """

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index


def as_items(X, image_column="image", prompt_column="prompt"):
    """Validate the container X and return its image items and per-row prompts.

    Parameters
    ----------
    X : sequence, numpy array, pandas Series or DataFrame, or datasets.Dataset
        The images. A DataFrame needs an ``image_column``; its ``prompt_column``,
        when present, gives one prompt per row.
    image_column, prompt_column : str
        Column names used for DataFrames and Hugging Face datasets.

    Returns
    -------
    items : list
        One entry per image, not yet decoded.
    prompts : list of str or None
        Per-row prompts, or None when X carries none.
    """
    prompts = None
    module = type(X).__module__.split(".")[0]
    if module == "pandas" and hasattr(X, "columns"):
        if image_column not in X.columns:
            raise ValueError(
                f"X is a DataFrame without an {image_column!r} column (columns: "
                f"{list(X.columns)}). Name the column holding the images "
                f"{image_column!r}, or pass that column alone."
            )
        items = X[image_column].tolist()
        if prompt_column in X.columns:
            prompts = _check_prompts(X[prompt_column].tolist())
    elif module == "polars" and hasattr(X, "columns"):
        return as_items(X.to_pandas(), image_column, prompt_column)
    elif module == "datasets" and hasattr(X, "column_names"):
        if image_column not in X.column_names:
            raise ValueError(
                f"X is a datasets.Dataset without an {image_column!r} column "
                f"(columns: {X.column_names}). Rename the image column with "
                f"dataset.rename_column(..., {image_column!r})."
            )
        items = list(X[image_column])
        if prompt_column in X.column_names:
            prompts = _check_prompts(list(X[prompt_column]))
    elif isinstance(X, (str, bytes, os.PathLike, Image.Image)):
        raise TypeError(
            f"X must be a collection of images, got a single {type(X).__name__}. "
            "Wrap it in a list: transform([image])."
        )
    elif isinstance(X, np.ndarray):
        if X.ndim == 1:
            items = list(X)
        elif X.ndim in (3, 4) and X.dtype != object:
            items = list(X)  # a stack of images, N x H x W (x C)
        else:
            raise ValueError(
                f"X is a numpy array of shape {X.shape}; expected a 1-D array of "
                "images or paths, or a stack of images of shape (N, H, W) or "
                "(N, H, W, C)."
            )
    elif isinstance(X, Sequence) or hasattr(X, "tolist"):
        items = X.tolist() if hasattr(X, "tolist") else list(X)
    else:
        try:
            items = list(X)
        except TypeError:
            raise TypeError(
                f"X of type {type(X).__name__} is not a collection of images. "
                f"Pass a list, numpy array or pandas Series of {ACCEPTED}, or a "
                "DataFrame with an 'image' column."
            ) from None
    if len(items) == 0:
        raise ValueError("X is empty: pass at least one image.")
    return items, prompts


def _check_prompts(prompts):
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(
                f"X['prompt'][{i}] is {type(p).__name__}, not a string. Fill the "
                "prompt column with text (or drop it to use the estimator's prompt)."
            )
    return prompts


def _describe(item, index):
    if isinstance(item, (str, os.PathLike)):
        return f"X[{index}] ({os.fspath(item)!r})"
    return f"X[{index}] ({type(item).__name__})"


def load_image(item, index=0):
    """Decode one item into an RGB PIL image.

    Parameters
    ----------
    item : str, Path, PIL.Image.Image, numpy.ndarray or bytes
        The image or where to find it.
    index : int, default=0
        The item's position in X, for error messages.

    Returns
    -------
    image : PIL.Image.Image
        Mode ``"RGB"``, fully loaded.

    Raises
    ------
    ImageLoadError
        With the index, the path when there is one, the problem and the fix.
    """
    where = _describe(item, index)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        # The form a datasets.Image feature takes when decoding is off.
        item = item.get("bytes") or item.get("path")
    try:
        if isinstance(item, Image.Image):
            image = item
            image.load()
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise ImageLoadError(
                    f"{where}: no such file. Check the path; relative paths are "
                    f"resolved against the working directory {os.getcwd()!r}.",
                    index,
                )
            image = Image.open(path)
            image.load()
        elif isinstance(item, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(item)))
            image.load()
        elif isinstance(item, np.ndarray):
            image = _array_to_image(item, where, index)
        else:
            raise ImageLoadError(
                f"{where}: unsupported type {type(item).__name__}. Pass {ACCEPTED}.",
                index,
            )
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"{where}: not an image format PIL can read. Convert it to PNG or JPEG, "
            "or remove it (on_error='nan' keeps going with a NaN row).",
            index,
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(
            f"{where}: the image could not be decoded ({exc}); the file may be "
            "truncated or corrupt. Re-export it, or pass on_error='nan' to skip it "
            "with a NaN row.",
            index,
        ) from None
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(
            f"{where}: the image has zero size ({image.width}x{image.height}). "
            "Remove it from X.",
            index,
        )
    return to_rgb(image)


def _array_to_image(array, where, index):
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{where}: array of shape {array.shape} is not an image; expected HxW, "
            "HxWx1, HxWx3 or HxWx4 (channels last).",
            index,
        )
    if array.size == 0:
        raise ImageLoadError(
            f"{where}: the array has zero size {array.shape}. Remove it from X.", index
        )
    if array.dtype == np.uint8:
        data = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(
                f"{where}: the array holds NaN or infinite values. Replace them "
                "(e.g. np.nan_to_num) before passing the image.",
                index,
            )
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageLoadError(
                f"{where}: float arrays must hold values in [0, 1], got "
                f"[{low:g}, {high:g}]. Divide by 255 (or pass uint8).",
                index,
            )
        data = np.round(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        low, high = int(array.min()), int(array.max())
        if array.dtype == bool:
            data = array.astype(np.uint8) * 255
        elif low < 0 or high > 255:
            raise ImageLoadError(
                f"{where}: integer arrays must hold values in [0, 255], got "
                f"[{low}, {high}]. Rescale to uint8 first.",
                index,
            )
        else:
            data = array.astype(np.uint8)
    else:
        raise ImageLoadError(
            f"{where}: arrays of dtype {array.dtype} are not supported; pass uint8 "
            "or float in [0, 1].",
            index,
        )
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[data.shape[-1] if data.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(data), mode=mode)


def to_rgb(image):
    """Convert a PIL image of any mode to RGB the way a viewer shows it.

    Transparent pixels are composited over white (as Hugging Face's
    ``convert_rgb`` does); 16- and 32-bit integer images are scaled from their
    16-bit range, float images from [0, 1] when they fit in it (else clipped
    to [0, 255]).

    Parameters
    ----------
    image : PIL.Image.Image

    Returns
    -------
    image : PIL.Image.Image
        Mode ``"RGB"``.

    Examples
    --------
    >>> from PIL import Image
    >>> from skvlm._inputs import to_rgb
    >>> to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
    (255, 255, 255)
    >>> to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0))
    (255, 255, 255)
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I"):
        data = np.asarray(image).astype(np.float64) / 257.0
        return Image.fromarray(
            np.clip(np.round(data), 0, 255).astype(np.uint8)
        ).convert("RGB")
    if mode == "F":
        data = np.asarray(image, dtype=np.float64)
        data = np.nan_to_num(data)
        if data.size and data.min() >= 0.0 and data.max() <= 1.0:
            data = data * 255.0
        return Image.fromarray(
            np.clip(np.round(data), 0, 255).astype(np.uint8)
        ).convert("RGB")
    return image.convert("RGB")


_FILE_KEYS: dict[tuple, str] = {}
_FILE_KEYS_LOCK = threading.Lock()


def image_key(item, index=0):
    """A content hash of one item: file bytes for paths, pixels otherwise.

    A renamed file keeps its key; an edited file gets a new one. File keys are
    memoised per (path, size, mtime, inode), so a grid search does not re-read
    every file for every fold.

    Parameters
    ----------
    item : str, Path, PIL.Image.Image, numpy.ndarray or bytes
    index : int, default=0
        The item's position in X, for error messages.

    Returns
    -------
    key : str
        40 hex digits.
    """
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        item = item.get("bytes") or item.get("path")
    if isinstance(item, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(item))
        try:
            st = os.stat(path)
        except OSError:
            raise ImageLoadError(
                f"{_describe(item, index)}: no such file. Check the path.", index
            ) from None
        memo = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        with _FILE_KEYS_LOCK:
            key = _FILE_KEYS.get(memo)
        if key is None:
            digest = hashlib.sha1(b"file")
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            key = digest.hexdigest()
            with _FILE_KEYS_LOCK:
                _FILE_KEYS[memo] = key
        return key
    digest = hashlib.sha1()
    if isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"file")
        digest.update(bytes(item))
    elif isinstance(item, Image.Image):
        digest.update(f"pil:{item.mode}:{item.size}".encode())
        digest.update(item.tobytes())
    elif isinstance(item, np.ndarray):
        digest.update(f"array:{item.dtype.str}:{item.shape}".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
    else:
        raise ImageLoadError(
            f"{_describe(item, index)}: unsupported type {type(item).__name__}. "
            f"Pass {ACCEPTED}.",
            index,
        )
    return digest.hexdigest()
