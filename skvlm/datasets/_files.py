"""Users' own images: a folder with one subfolder per class, or a CSV manifest."""

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .._sklearn_compat import StrOptions, validate_params
from ._base import _finish

IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".png",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
_VERIFY_THREADS = 8


@validate_params(
    {
        "path": [str, os.PathLike],
        "extensions": [list, tuple, set, frozenset, str],
        "on_error": [StrOptions({"raise", "skip"})],
        "verify": ["boolean"],
        "return_X_y": ["boolean"],
        "as_frame": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_image_folder(
    path,
    *,
    extensions=IMAGE_EXTENSIONS,
    on_error="raise",
    verify=True,
    return_X_y=False,
    as_frame=False,
):
    """Load an image classification folder: one subfolder per class.

    ``path/cat/1.jpg, path/cat/2.png, path/dog/a.jpg, ...``: the class names are
    the subfolder names, sorted; images in nested folders below a class folder
    belong to that class. Files with other extensions and hidden files are
    ignored. Images are returned as paths, not decoded: the transformer decodes
    them lazily, batch by batch, so memory stays low.

    Parameters
    ----------
    path : str or Path
        The folder that holds the class subfolders.
    extensions : sequence of str, default=IMAGE_EXTENSIONS
        File extensions counted as images (case-insensitive).
    on_error : {"raise", "skip"}, default="raise"
        What to do with files PIL cannot read: raise one error that lists them
        all, or drop them with a warning that lists them.
    verify : bool, default=True
        Check each file's header with PIL (``Image.open(...).verify()``: cheap,
        no pixel decoding, so a truncated JPEG body passes and is caught at
        transform time). Set False to skip the check on very large folders.
    return_X_y : bool, default=False
        Return ``(paths, target)`` instead of a Bunch.
    as_frame : bool, default=False
        ``data`` becomes a DataFrame with an ``image`` column of paths, and
        ``frame`` holds ``image``, ``label`` (class name) and ``target``.

    Returns
    -------
    data : Bunch
        ``paths`` (list of str; ``data`` is the same list or, with
        ``as_frame=True``, the ``image`` DataFrame), ``target`` (int array),
        ``target_names`` (sorted folder names), ``frame`` (or None), ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skvlm.datasets import load_digit_images, load_image_folder
    >>> digits = load_digit_images(n_class=2, n_per_class=3)
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i, (img, k) in enumerate(zip(digits.images, digits.target)):
    ...     folder = root / digits.target_names[k]
    ...     folder.mkdir(exist_ok=True)
    ...     img.save(folder / f"{i}.png")
    >>> data = load_image_folder(root)
    >>> data.target_names.tolist(), data.target.tolist()
    (['one', 'zero'], [0, 0, 0, 1, 1, 1])
    >>> pathlib.Path(data.paths[0]).relative_to(root).as_posix()
    'one/3.png'
    """
    _check_on_error(on_error)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"Image folder '{root}' does not exist. Pass the folder that holds one "
            "subfolder per class (e.g. 'data/train' for data/train/cat/1.jpg)."
        )
    if not root.is_dir():
        raise NotADirectoryError(
            f"'{root}' is a file, not a folder. Pass the folder that holds one "
            "subfolder per class, or use load_image_csv for a CSV manifest."
        )
    suffixes = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    class_dirs = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not class_dirs:
        raise ValueError(
            f"Image folder '{root}' has no class subfolders. Put each class's "
            f"images in its own subfolder: '{root / 'cat' / '1.jpg'}', "
            f"'{root / 'dog' / '1.jpg'}', ..."
        )
    _check_two_classes(
        [p.name for p in class_dirs],
        f"Image folder '{root}'",
        "add a subfolder per class",
    )
    loose = [p for p in root.iterdir() if _is_image(p, suffixes)]
    if loose:
        warnings.warn(
            f"{len(loose)} image file(s) directly in '{root}' belong to no class "
            f"folder and were ignored (e.g. '{loose[0].name}'). Move them into "
            "their class's subfolder.",
            UserWarning,
            stacklevel=2,
        )
    paths, target, empty = [], [], []
    for k, folder in enumerate(class_dirs):
        files = sorted(
            p
            for p in folder.rglob("*")
            if _is_image(p, suffixes)
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            empty.append(str(folder))
        paths.extend(str(p) for p in files)
        target.extend([k] * len(files))
    if empty:
        raise ValueError(
            f"{len(empty)} class folder(s) of '{root}' hold no image files with "
            f"extension {sorted(suffixes)}: {empty}. Add images to them, remove "
            "them, or pass extensions=... if your images use another extension."
        )
    keep = _verified(paths, verify, on_error, where=[str(p) for p in paths])
    paths = [paths[i] for i in keep]
    target = np.asarray(target, dtype=np.int64)[keep]
    names = np.array([p.name for p in class_dirs], dtype=object)
    _check_nonempty_classes(target, names, root)
    descr = (
        f"Image folder '{root}': {len(paths)} images in {len(names)} "
        f"classes ({', '.join(names)}), one subfolder per class."
    )
    return _finish(paths, target, names, descr, return_X_y, as_frame, key="paths")


@validate_params(
    {
        "path": [str, os.PathLike],
        "image_column": [str],
        "label_column": [str],
        "root": [str, os.PathLike, None],
        "on_error": [StrOptions({"raise", "skip"})],
        "verify": ["boolean"],
        "return_X_y": ["boolean"],
        "as_frame": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_image_csv(
    path,
    image_column="image",
    label_column="label",
    *,
    root=None,
    on_error="raise",
    verify=True,
    return_X_y=False,
    as_frame=False,
):
    """Load images and labels listed in a CSV file.

    Parameters
    ----------
    path : str or Path
        The CSV file, with a header row.
    image_column : str, default="image"
        Column of image paths; relative paths are taken from the CSV's folder,
        or from ``root`` when given.
    label_column : str, default="label"
        Column of class labels, read as text. The class names are the distinct
        labels sorted (numerically when every label is an integer).
    root : str, Path or None, default=None
        Folder that relative image paths start from; None means the CSV's folder.
    on_error : {"raise", "skip"}, default="raise"
        What to do with rows whose image file is missing or unreadable: raise one
        error that lists them all, or drop them with a warning that lists them.
        Rows with an empty image or label cell always raise.
    verify : bool, default=True
        Check each file's header with PIL (cheap, no pixel decoding).
    return_X_y : bool, default=False
        Return ``(paths, target)`` instead of a Bunch.
    as_frame : bool, default=False
        ``data`` becomes a DataFrame with an ``image`` column of paths, and
        ``frame`` holds ``image``, ``label`` and ``target``.

    Returns
    -------
    data : Bunch
        ``paths`` (absolute paths as str; ``data`` is the same list or the
        ``image`` DataFrame), ``target`` (int array), ``target_names``,
        ``frame`` (or None), ``DESCR``.
    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skvlm.datasets import load_digit_images, load_image_csv
    >>> digits = load_digit_images(n_class=2, n_per_class=2)
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> rows = ["file,digit"]
    >>> for i, (img, k) in enumerate(zip(digits.images, digits.target)):
    ...     img.save(root / f"{i}.png")
    ...     rows.append(f"{i}.png,{digits.target_names[k]}")
    >>> _ = (root / "labels.csv").write_text("\\n".join(rows))
    >>> data = load_image_csv(root / "labels.csv", "file", "digit")
    >>> data.target_names.tolist(), data.target.tolist()
    (['one', 'zero'], [1, 1, 0, 0])
    """
    _check_on_error(on_error)
    csv = Path(path)
    if not csv.is_file():
        raise FileNotFoundError(
            f"CSV file '{csv}' does not exist"
            + (
                " (it is a folder; use load_image_folder for one subfolder per class)."
                if csv.is_dir()
                else ". Check the path."
            )
        )
    table = pd.read_csv(
        csv,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,  # keeps row i on line i + 2 for the error messages
        skipinitialspace=True,
        encoding="utf-8-sig",  # drops the byte-order mark spreadsheet programs write
    )
    missing = [c for c in (image_column, label_column) if c not in table.columns]
    if missing:
        raise KeyError(
            f"CSV file '{csv}' has no column(s) {missing}; its columns are "
            f"{list(table.columns)}. Pass image_column=... and label_column=..."
        )
    images = table[image_column].str.strip()
    labels = table[label_column].str.strip()
    # Line numbers as a text editor shows them: the header is line 1.
    lines = np.arange(len(table)) + 2
    for empty, other, problem in (
        (images, labels, f"a label but no image (empty '{image_column}' cell)"),
        (labels, images, f"an image but no label (empty '{label_column}' cell)"),
    ):
        bad = np.flatnonzero(((empty == "") & (other != "")).to_numpy())
        if len(bad):
            raise ValueError(
                f"CSV file '{csv}': {len(bad)} row(s) have {problem} at line(s) "
                f"{lines[bad].tolist()}. Fill in or delete those rows."
            )
    rows = np.flatnonzero((images != "").to_numpy())  # skips fully blank rows
    base = Path(root) if root is not None else csv.parent
    paths = [
        str(p if p.is_absolute() else base / p)
        for p in (Path(images.iloc[i]) for i in rows)
    ]
    where = [f"line {lines[i]} ('{p}')" for i, p in zip(rows, paths, strict=True)]
    keep = _verified(paths, verify, on_error, where=where)
    paths = [paths[i] for i in keep]
    labels = labels.iloc[rows[keep]].to_numpy(dtype=object)
    names = _sorted_labels(set(labels))
    _check_two_classes(names, f"CSV file '{csv}'", f"check the '{label_column}' column")
    code = {name: k for k, name in enumerate(names)}
    target = np.array([code[v] for v in labels], dtype=np.int64)
    descr = (
        f"CSV manifest '{csv}': {len(paths)} images in {len(names)} classes "
        f"from columns '{image_column}' and '{label_column}'."
    )
    return _finish(paths, target, names, descr, return_X_y, as_frame, key="paths")


def _sorted_labels(labels):
    if all(re.fullmatch(r"[+-]?\d+", v) for v in labels):
        return np.array(sorted(labels, key=int), dtype=object)
    return np.array(sorted(labels), dtype=object)


def _is_image(path, suffixes):
    return (
        path.suffix.lower() in suffixes
        and path.is_file()
        and not path.name.startswith(".")
    )


def _verified(paths, verify, on_error, where):
    """Indices of the readable files; raise or warn listing all the others."""
    # Checking headers is file I/O bound: threads overlap the waits (network disks).
    with ThreadPoolExecutor(max_workers=_VERIFY_THREADS) as pool:
        problems = list(pool.map(partial(_check_file, verify=verify), paths))
    bad = [
        (i, f"{where[i]}: {problem}") for i, problem in enumerate(problems) if problem
    ]
    if not bad:
        return np.arange(len(paths))
    listing = "\n  ".join(msg for _, msg in bad)
    if on_error == "raise":
        raise ValueError(
            f"{len(bad)} image file(s) cannot be read:\n  {listing}\nFix or delete "
            "them, or pass on_error='skip' to leave them out with a warning."
        )
    warnings.warn(
        f"Skipped {len(bad)} unreadable image file(s):\n  {listing}",
        UserWarning,
        stacklevel=3,
    )
    dropped = {i for i, _ in bad}
    return np.array([i for i in range(len(paths)) if i not in dropped], dtype=int)


def _check_file(path, verify):
    if not Path(path).is_file():
        return "file not found"
    if not verify:
        return None
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types for bad files
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return None


def _check_two_classes(names, where, fix):
    if len(names) < 2:
        found = f"only the class {list(names)}" if len(names) else "no class"
        raise ValueError(
            f"{where} has {found}; a classifier needs at least two classes: {fix}."
        )


def _check_nonempty_classes(target, names, root):
    empty = [n for k, n in enumerate(names) if not np.any(target == k)]
    if empty:
        raise ValueError(
            f"After skipping unreadable files, class folder(s) {empty} of "
            f"'{root}' hold no image. Fix the files or remove the folder(s)."
        )


def _check_on_error(on_error):
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}.")
