"""Images in any accepted form -> validated RGB PIL images, and their content keys.

Validation of the container happens up front (cheap); decoding happens one batch
at a time, so a transform never holds more decoded images than a batch.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence, Set
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._filestate import FileChangingError, FileDigests

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
    items : sequence
        One entry per image, not yet decoded (a lazy view for a
        ``datasets.Dataset``: rows are read from its Arrow table on access).
    prompts : list of str or None
        Per-row prompts, or None when X carries none.

    Examples
    --------
    >>> from skvlm._inputs import as_items
    >>> as_items(["a.png", "b.png"])
    (['a.png', 'b.png'], None)
    >>> as_items({"a.png", "b.png"})
    Traceback (most recent call last):
    ...
    TypeError: X is a set, whose order is arbitrary: ...
    """
    prompts = None
    module = type(X).__module__.split(".")[0]
    if isinstance(X, HFDatasetView):
        X = X.dataset
        module = "datasets"
    if module == "pandas" and hasattr(X, "columns"):
        if image_column not in X.columns:
            raise ValueError(
                f"X is a DataFrame without an {image_column!r} column (columns: "
                f"{list(X.columns)}). Pass image_column='<name>' to the estimator "
                "to read another column, or pass that column alone."
            )
        items = X[image_column].tolist()
        if prompt_column in X.columns:
            prompts = _check_prompts(X[prompt_column].tolist(), prompt_column)
    elif module == "polars" and hasattr(X, "columns"):
        return as_items(X.to_pandas(), image_column, prompt_column)
    elif module == "datasets" and hasattr(X, "column_names"):
        if image_column not in X.column_names:
            raise ValueError(
                f"X is a datasets.Dataset without an {image_column!r} column "
                f"(columns: {X.column_names}). Pass image_column='<name>' to the "
                "estimator to read another column."
            )
        items = _DatasetColumn(X, image_column)
        if prompt_column in X.column_names:
            prompts = _check_prompts(list(X[prompt_column]), prompt_column)
    elif isinstance(X, (str, bytes, os.PathLike, Image.Image)):
        raise TypeError(
            f"X must be a collection of images, got a single {type(X).__name__}. "
            "Wrap it in a list: transform([image])."
        )
    elif isinstance(X, np.ndarray):
        items = _array_items(X)
    elif isinstance(X, (Set, Mapping)):
        kind = "set" if isinstance(X, Set) else type(X).__name__
        raise TypeError(
            f"X is a {kind}, whose order is arbitrary: output rows could not be "
            "matched to y or to anything else. Pass a list instead (sorted(X) for "
            "a reproducible order)."
            if isinstance(X, Set)
            else f"X is a {kind}, not a collection of images. Pass a list of its "
            "images (list(X.values())), or a DataFrame with an 'image' column."
        )
    elif isinstance(X, Iterator):
        raise TypeError(
            f"X is an iterator ({type(X).__name__}), which can be read only once: "
            "fit would consume it and transform would find it empty. Pass a list "
            "instead: list(X)."
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


def _array_items(X):
    """The images of a numpy array X: 1-D of items, or a stack of images."""
    if X.ndim == 1:
        return list(X)
    if X.ndim == 3 and X.dtype != object and X.shape[-1] in (1, 3, 4):
        # (H, W, C) is one image; read as a stack it would become H images of
        # W x C pixels, silently.
        raise ValueError(
            f"X is a numpy array of shape {X.shape}, which looks like one image "
            "(height, width, channels), not a collection of images. Wrap it in a "
            "list, transform([image]), or add an axis, transform(image[None]). (A "
            "stack of grayscale images that narrow: pass list(X).)"
        )
    if X.ndim in (3, 4) and X.dtype != object:
        return list(X)  # a stack of images, N x H x W (x C)
    raise ValueError(
        f"X is a numpy array of shape {X.shape}; expected a 1-D array of "
        "images or paths, or a stack of images of shape (N, H, W) or "
        "(N, H, W, C)."
    )


class _DatasetColumn(Sequence):
    """A ``datasets.Dataset`` image column as a lazy sequence of undecoded items.

    Each access reads one row from the (memory-mapped) Arrow table, as the
    ``{"bytes", "path"}`` dict of an undecoded ``datasets.Image``, so a
    transform holds no more decoded images than a batch.
    """

    def __init__(self, dataset, column):
        feature = dataset.features.get(column)
        if type(feature).__name__ == "Image" and getattr(feature, "decode", False):
            # Metadata only: the rows stay in the Arrow table.
            dataset = dataset.cast_column(column, type(feature)(decode=False))
        self._dataset = dataset
        self._column = column

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._dataset[int(index)][self._column]


class HFDatasetView:
    """A Hugging Face ``datasets.Dataset`` that scikit-learn can split.

    sklearn's cross-validation indexes X as an array (``X[indices, ...]``),
    which ``datasets.Dataset`` refuses. This view answers such indexing with
    ``dataset.select(indices)``: a lazy selection of the same Arrow table, no
    copy, no decoding. skvlm's image estimators read it like the dataset.

    Parameters
    ----------
    dataset : datasets.Dataset
        The rows; its image column is read by the estimator's ``image_column``.

    Examples
    --------
    >>> import numpy as np
    >>> from datasets import Dataset
    >>> from skvlm.datasets import HFDatasetView
    >>> view = HFDatasetView(Dataset.from_dict({"image": ["a.png", "b.png"]}))
    >>> view[np.array([1]), ...]
    HFDatasetView(n_rows=1, columns=['image'])
    """

    def __init__(self, dataset):
        if not hasattr(dataset, "select") or not hasattr(dataset, "column_names"):
            raise TypeError(
                f"HFDatasetView wraps a datasets.Dataset, got {type(dataset).__name__}."
            )
        self.dataset = dataset

    @property
    def shape(self):
        return (len(self.dataset),)

    @property
    def column_names(self):
        return self.dataset.column_names

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and key[1] is Ellipsis:
            key = key[0]  # sklearn's array indexing: X[key, ...]
        if isinstance(key, (int, np.integer)):
            return self.dataset[int(key)]
        if isinstance(key, slice):
            indices = range(*key.indices(len(self)))
        else:
            key = np.asarray(key)
            indices = np.flatnonzero(key) if key.dtype == bool else key.astype(int)
        return HFDatasetView(self.dataset.select(indices))

    def __repr__(self):
        return f"HFDatasetView(n_rows={len(self)}, columns={self.column_names})"


def _check_prompts(prompts, column="prompt"):
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(
                f"X[{column!r}][{i}] is {type(p).__name__}, not a string. Fill the "
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
            if path.is_dir():
                raise ImageLoadError(
                    f"{where}: is a directory, not an image file. List the images "
                    "inside it instead (skvlm.datasets.load_image_folder reads a "
                    "folder of class subfolders).",
                    index,
                )
            if not path.is_file():
                raise ImageLoadError(
                    f"{where}: no such file. Check the path; relative paths are "
                    f"resolved against the working directory {os.getcwd()!r}.",
                    index,
                )
            image = _open(path, where, index)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            image = _open(io.BytesIO(bytes(item)), where, index)
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
    try:
        return to_rgb(image)
    except (OSError, ValueError) as exc:
        raise ImageLoadError(
            f"{where}: a {image.mode!r} image could not be converted to RGB ({exc}). "
            "Convert it to RGB first, or pass on_error='nan' to skip it with a NaN "
            "row.",
            index,
        ) from None


def _open(source, where, index):
    """Decode a file or buffer, with the pixel limit checked on the header first."""
    try:
        image = Image.open(source)  # reads the header only
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageLoadError(
            _too_many_pixels(where, int(pixels.group(1)) if pixels else None), index
        ) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise ImageLoadError(
            _too_many_pixels(where, image.width * image.height, image.size), index
        )
    image.load()
    return image


def _too_many_pixels(where, pixels, size=None):
    limit = Image.MAX_IMAGE_PIXELS
    what = f"{size[0]}x{size[1]} = " if size else ""
    count = f"{what}{pixels / 1e6:,.1f} Mpx" if pixels else "its pixel count"
    memory = f" (decoding it would take {3 * pixels / 2**30:.1f} GiB or more)"
    raise_to = f"{-(-pixels // 10**6) * 10**6:_}" if pixels else "<pixels>"
    return (
        f"{where}: {count} is over the limit of {limit / 1e6:,.1f} Mpx that guards "
        f"against decompression bombs (PIL.Image.MAX_IMAGE_PIXELS)"
        f"{memory if pixels else ''}. If the image is genuine, raise the limit in "
        f"this process: PIL.Image.MAX_IMAGE_PIXELS = {raise_to} (None removes it); "
        "or pass on_error='nan' to skip it with a NaN row."
    )


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
    if mode == "La":  # PIL converts premultiplied L only to LA
        image, mode = image.convert("LA"), "LA"
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


def pad_to_square(image, fill=(0, 0, 0)):
    """Pad an image to a square, centred, with a fill colour (LLaVA's ``expand2square``).

    The paper's fine-tuning and evaluation (LLaVA's ``--image_aspect_ratio pad``)
    pad every image to a square with the image processor's mean colour instead
    of centre-cropping it, so no part of the object is cut off. This is that
    operation, pixel for pixel: the longer side is kept, the image is pasted at
    offset ``(longer - shorter) // 2`` on the shorter axis.

    Parameters
    ----------
    image : PIL.Image.Image
        An RGB image (see :func:`to_rgb`).
    fill : tuple of int or sequence of float, default=(0, 0, 0)
        The padding colour: 0-255 integers, or the processor's ``image_mean``
        (floats in [0, 1], scaled by 255 and truncated as LLaVA does).

    Returns
    -------
    image : PIL.Image.Image
        Square, of side ``max(width, height)``; the input itself when already
        square.

    Examples
    --------
    >>> from PIL import Image
    >>> from skvlm._inputs import pad_to_square
    >>> wide = Image.new("RGB", (4, 2), (255, 0, 0))
    >>> square = pad_to_square(wide, fill=[0.5, 0.5, 0.5])
    >>> square.size, square.getpixel((0, 0)), square.getpixel((0, 1))
    ((4, 4), (127, 127, 127), (255, 0, 0))
    """
    width, height = image.size
    if width == height:
        return image
    colour = tuple(int(c * 255) if isinstance(c, float) else int(c) for c in fill)
    side = max(width, height)
    result = Image.new(image.mode, (side, side), colour)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


_FILE_KEYS = FileDigests(lambda: hashlib.sha1(b"file"))
IMAGE_ASPECTS = ("native", "pad")


def image_loader(image_aspect, processor=None):
    """``load(item, index)``: :func:`load_image`, then padded when ``image_aspect="pad"``.

    ``"native"`` hands the image to the processor as it is (which then resizes
    and centre-crops it); ``"pad"`` first pads it to a square with the
    processor's ``image_mean`` (:func:`pad_to_square`, LLaVA's
    ``--image_aspect_ratio pad``), so the crop cuts nothing off.

    Parameters
    ----------
    image_aspect : {"native", "pad"}
    processor : transformers processor or image processor, default=None
        Where the padding colour comes from (``image_processor.image_mean``);
        black when it has none.

    Returns
    -------
    load : callable

    Examples
    --------
    >>> from PIL import Image
    >>> from skvlm._inputs import image_loader
    >>> load = image_loader("pad")
    >>> load(Image.new("RGB", (4, 2)), 0).size
    (4, 4)
    """
    if image_aspect not in IMAGE_ASPECTS:
        raise ValueError(
            f"image_aspect must be one of {list(IMAGE_ASPECTS)}; got {image_aspect!r}."
        )
    if image_aspect == "native":
        return load_image
    images = getattr(processor, "image_processor", processor)
    fill = getattr(images, "image_mean", None) or (0, 0, 0)

    def load(item, index=0):
        return pad_to_square(load_image(item, index), fill=fill)

    return load


def image_key(item, index=0):
    """A content hash of one item: what decides the pixels the model receives.

    One rule for every input kind, each exact (two items share a key only if
    they give the processor the same pixels):

    - An encoded image (a path, bytes, or a ``datasets`` row holding either)
      is keyed on the file's bytes: decoding is a function of the bytes, and
      they cover everything that decides the pixels (palette, transparency,
      bit depth, EXIF). The same file under another name, or passed as bytes,
      keeps its key; an edited file gets a new one.
    - A decoded image (a PIL image in any mode, a numpy array) is keyed on the
      RGB pixels :func:`load_image` makes of it, the very pixels the
      processor receives, with their size. A ``P`` image is keyed on its
      colours, not its palette indices; an array and the PIL image it equals
      share a key.

    File keys are memoised by (path, size, mtime, ctime, inode, device), with
    the racy-clean rule of :mod:`skvlm._filestate` (shared with the model
    files), so a grid search does not re-read every file for every fold, and
    a file rewritten in place with its times restored is read again.

    Parameters
    ----------
    item : str, Path, PIL.Image.Image, numpy.ndarray or bytes
    index : int, default=0
        The item's position in X, for error messages.

    Returns
    -------
    key : str
        40 hex digits.

    Raises
    ------
    ImageLoadError
        For an item that cannot be read (as :func:`load_image` would).

    Examples
    --------
    >>> from PIL import Image
    >>> from skvlm._inputs import image_key
    >>> a = Image.new("P", (2, 2), 0)
    >>> a.putpalette([255, 0, 0] + [0] * 765)
    >>> b = Image.new("P", (2, 2), 0)
    >>> b.putpalette([0, 0, 255] + [0] * 765)
    >>> image_key(a) == image_key(b)
    False
    >>> image_key(a) == image_key(Image.new("RGB", (2, 2), (255, 0, 0)))
    True
    """
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        item = item.get("bytes") or item.get("path")
    if isinstance(item, (str, os.PathLike)):
        return _file_key(item, index)
    if isinstance(item, (bytes, bytearray, memoryview)):
        digest = hashlib.sha1(b"file")
        digest.update(item)
        return digest.hexdigest()
    if isinstance(item, (Image.Image, np.ndarray)):
        image = load_image(item, index)
        digest = hashlib.sha1(f"pil:RGB:{image.size}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()
    raise ImageLoadError(
        f"{_describe(item, index)}: unsupported type {type(item).__name__}. "
        f"Pass {ACCEPTED}.",
        index,
    )


def _file_key(item, index):
    """The memoised key of a file's bytes, with errors that name the item."""
    where = _describe(item, index)
    try:
        st = os.stat(item)
    except OSError:
        raise ImageLoadError(f"{where}: no such file. Check the path.", index) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ImageLoadError(
            f"{where}: is {kind}, not an image file. List the image files "
            "instead, or pass on_error='nan' to skip it with a NaN row.",
            index,
        )
    try:
        return _FILE_KEYS(item)
    except FileChangingError:
        raise ImageLoadError(
            f"{where}: the file changed every time skvlm read it. Wait until "
            "whatever writes it has finished, or pass on_error='nan' to skip it "
            "with a NaN row.",
            index,
        ) from None
    except OSError as exc:
        raise ImageLoadError(
            f"{where}: could not be read ({exc.strerror or exc}). Check its "
            "permissions, or pass on_error='nan' to skip it with a NaN row.",
            index,
        ) from None
