"""What ``extract_features`` accepts as X, turned into a Ray Dataset of images.

Images travel to the actors as absolute paths (read there, so they must be
visible on every node: a shared or object-store-backed file system) or as the
encoded file bytes. Both give the same store key as a local transform of the
same file, because the key hashes the file's bytes either way.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from .._inputs import as_items
from ..datasets import IMAGE_EXTENSIONS

#: Column names inside the pipeline, whatever the user's columns are called.
IMAGE, PROMPT = "image", "prompt"


def as_dataset(X, *, image_column="image", prompt_column="prompt", batch_size=32):
    """A ``ray.data.Dataset`` with an ``image`` column (and ``prompt`` if X has one).

    Parameters
    ----------
    X : list of paths or bytes, str or Path, or ray.data.Dataset
        A collection of image paths or encoded bytes (or a DataFrame with an
        image column, as ``VLMEmbeddingTransformer`` takes); a folder, whose
        image files are all taken (recursively, sorted, hidden files skipped);
        a CSV file, whose ``image_column`` lists paths (relative ones start at
        the CSV's folder); or a Ray Dataset whose ``image_column`` holds paths
        or bytes.
    image_column, prompt_column : str
        Column names in a DataFrame, CSV or Ray Dataset.
    batch_size : int
        Images per model batch; a list is cut into blocks of one batch, so that
        every actor of a pool gets work (at most 10 000 blocks).

    Returns
    -------
    dataset : ray.data.Dataset
    n_images : int or None
        None for a Ray Dataset (counting it would read it).
    """
    import ray.data

    if isinstance(X, ray.data.Dataset):
        return _from_ray(X, image_column, prompt_column), None
    if isinstance(X, (str, os.PathLike)):
        items, prompts = _from_disk(Path(X), image_column), None
    else:
        items, prompts = as_items(X, image_column, prompt_column)
    rows = [{IMAGE: _portable(item, i)} for i, item in enumerate(items)]
    if prompts is not None:
        for row, prompt in zip(rows, prompts, strict=True):
            row[PROMPT] = prompt
    if not rows:
        raise ValueError("X holds no images: there is nothing to extract.")
    blocks = max(1, min(math.ceil(len(rows) / batch_size), 10_000))
    return ray.data.from_items(rows, override_num_blocks=blocks), len(rows)


def _portable(item, index):
    """The item as a worker can read it: an absolute path, or bytes."""
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        item = item.get("bytes") or item.get("path")
    if isinstance(item, (str, os.PathLike)):
        return os.path.abspath(os.fspath(item))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise TypeError(
        f"Image {index} is a {type(item).__name__}; extract_features sends images "
        "to Ray workers as file paths or encoded file bytes. Save the images to "
        "files (on a disk every node can read) and pass the paths, or pass each "
        "file's bytes."
    )


def _from_disk(path, image_column):
    if path.is_dir():
        files = sorted(
            str(p.resolve())
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ValueError(
                f"Folder '{path}' holds no image files (extensions "
                f"{', '.join(IMAGE_EXTENSIONS)}). Check the path."
            )
        return files
    if path.is_file() and path.suffix.lower() == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if image_column not in table.columns:
            raise KeyError(
                f"CSV file '{path}' has no {image_column!r} column; its columns "
                f"are {list(table.columns)}. Pass image_column=..."
            )
        names = [v.strip() for v in table[image_column] if v.strip()]
        return [
            str(p if p.is_absolute() else path.parent / p) for p in map(Path, names)
        ]
    raise ValueError(
        f"X='{path}' is neither a folder of images nor a .csv file"
        + ("" if path.exists() else " (it does not exist)")
        + ". Pass a folder, a CSV manifest, a list of paths or a ray.data.Dataset."
    )


def _from_ray(dataset, image_column, prompt_column):
    names = dataset.schema().names
    if image_column not in names:
        hint = (
            " (ray.data.read_binary_files names it 'bytes')" if "bytes" in names else ""
        )
        raise ValueError(
            f"The Ray Dataset has no {image_column!r} column (columns: {names}). "
            f"Pass image_column= naming the column of paths or bytes{hint}."
        )
    keep = {image_column: IMAGE}
    if prompt_column in names:
        keep[prompt_column] = PROMPT
    dataset = dataset.select_columns(list(keep))
    if any(old != new for old, new in keep.items()):
        dataset = dataset.rename_columns(keep)
    return dataset
