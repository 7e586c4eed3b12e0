"""The four data sets of Zhang et al. (NeurIPS 2024), with the paper's splits and names.

ImageNet-1k, Flowers102, StanfordCars and Caltech101 are read from where users
have them: torchvision's on-disk layout (what ``torchvision.datasets.X(root,
download=True)`` leaves under ``root``), a Hugging Face ``datasets.DatasetDict``,
or the paper's own ``{name}.jsonl`` (GitHub yuhui-zh15/VLMClassifier, ``data/``).
The class names are the paper's (``data/{name}_classes.json``, shipped in
``skvlm/_data/paper_classes``, MIT licence).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._files import IMAGE_EXTENSIONS

PAPER_DATASETS = ("imagenet", "flowers", "cars", "caltech")
#: The seed of the Caltech101 split built from torchvision's layout (which has none).
CALTECH_SEED = 1234
_TEST_SPLIT = {"imagenet": "valid"}  # the paper's jsonl: ImageNet's val is "valid"
#: Caltech101 folders whose names are not the paper's name with "_" -> " ".
_CALTECH_FOLDERS = {
    "Faces": "face",
    "Faces_easy": "face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
    "airplanes": "airplane",
}
_CALTECH_DROPPED = ("BACKGROUND_Google",)


def paper_class_names(name):
    """The paper's class names of one data set, in its label order.

    Parameters
    ----------
    name : {"imagenet", "flowers", "cars", "caltech"}

    Returns
    -------
    names : list of str
        ``data/{name}_classes.json`` of the paper's repository. ImageNet's has
        two "missile" and two "sunglasses" (indices 657 / 744 and 836 / 837).

    Examples
    --------
    >>> from skvlm.datasets import paper_class_names
    >>> names = paper_class_names("caltech")
    >>> len(names), names[:3]
    (100, ['face', 'leopard', 'motorbike'])
    """
    _check_name(name)
    text = (
        resources.files("skvlm")
        .joinpath("_data", "paper_classes", f"{name}.json")
        .read_text()
    )
    return json.loads(text)


def load_paper_dataset(name, source, *, class_names="paper", image_column=None):
    """One of the paper's data sets, split as the paper splits it.

    Parameters
    ----------
    name : {"imagenet", "flowers", "cars", "caltech"}
    source : str, Path or datasets.DatasetDict
        Where the images are, in one of three layouts:

        - **the paper's**: a ``{name}.jsonl`` file (``{"image": path, "label":
          name, "split": ...}`` a line; relative paths are read from the
          file's folder, or from its parent as the paper's ``./data/...``
          paths are), or a folder holding it. Its class names come from
          ``{name}_classes.json`` beside it, else the paper's.
        - **torchvision's**: the ``root`` passed to torchvision's data set:
          ``root/train/<wnid>/`` and ``root/val/<wnid>/`` with ``meta.bin`` or
          ``LOC_synset_mapping.txt`` (ImageNet), ``root/flowers-102/``
          (``jpg/``, ``imagelabels.mat``, ``setid.mat``),
          ``root/stanford_cars/`` (``devkit/``, ``cars_train/``,
          ``cars_test/``, ``cars_test_annos_withlabels.mat``),
          ``root/caltech101/101_ObjectCategories/<category>/``.
        - **Hugging Face**: a ``datasets.DatasetDict`` with ``train`` and
          ``test`` (ImageNet: ``validation``) splits, an image column and a
          ``ClassLabel`` column whose label ``i`` is class ``i`` of the data
          set's standard order (torchvision's).
    class_names : {"paper", "source"}, default="paper"
        ``"paper"``: the paper's names (:func:`paper_class_names`).
        ``"source"``: the names the source carries (ImageNet's devkit names
        such as "tench, Tinca tinca", the cars devkit's "AM General Hummer SUV
        2000", a ``ClassLabel``'s names); Caltech101's are always the paper's.
    image_column : str, default=None
        The image column of a Hugging Face source ("image" or "img" when None).

    Returns
    -------
    data : Bunch
        ``train`` and ``test``, each a Bunch of ``data`` (image paths, or an
        :class:`~skvlm.datasets.HFDatasetView` of a Hugging Face source) and
        ``target`` (int labels, ``target_names[target[i]]`` is image ``i``'s
        class); ``target_names`` (list of str; ImageNet's paper names repeat
        two names, as in the paper), ``image_column``, ``layout`` ("paper",
        "torchvision" or "huggingface") and ``DESCR``.

        The splits are the paper's: ImageNet train / val; Flowers102 train and
        val together (2,040 images) / test (6,149); StanfordCars train / test;
        Caltech101 without ``BACKGROUND_Google``, ``Faces`` and ``Faces_easy``
        as one class "face" (100 classes), half of each category's images for
        training. Caltech101 has no official split: from the paper's jsonl
        you get its split; from the other layouts, a seeded split with the
        same count per category (``round(n / 2)`` for training), not the same
        images. Within a split the rows keep the layout's order (torchvision's:
        sorted paths, which is the paper's jsonl order for Flowers102 and
        StanfordCars), so the paper's seeded shuffles pick the same images.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> from skvlm.datasets import load_paper_dataset
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"image": f"{i}.png", "label": label, "split": split}
    ...         for i, (label, split) in enumerate(
    ...             [("face", "train"), ("leopard", "train"), ("face", "test")])]
    >>> _ = (root / "caltech.jsonl").write_text(
    ...     "".join(json.dumps(r) + "\\n" for r in rows))
    >>> data = load_paper_dataset("caltech", root)
    >>> data.layout, data.train.target.tolist(), data.test.target.tolist()
    ('paper', [0, 1], [0])
    >>> len(data.target_names)
    100
    """
    _check_name(name)
    if class_names not in ("paper", "source"):
        raise ValueError(
            f"class_names must be 'paper' or 'source'; got {class_names!r}."
        )
    if _is_hf(source):
        return _from_huggingface(name, source, class_names, image_column)
    path = Path(source)
    jsonl = _paper_jsonl(name, path)
    if jsonl is not None:
        return _from_jsonl(name, jsonl, class_names)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{name}: '{path}' is neither a folder nor a .jsonl file. Pass the "
            f"root of torchvision's layout, the paper's {name}.jsonl (or its "
            "folder), or a datasets.DatasetDict."
        )
    loader = {
        "imagenet": _imagenet_folders,
        "flowers": _flowers_folders,
        "cars": _cars_folders,
        "caltech": _caltech_folders,
    }[name]
    return loader(path, class_names)


def load_imagenet(source, *, class_names="paper", image_column=None):
    """ImageNet-1k as the paper uses it: see :func:`load_paper_dataset`.

    Examples
    --------
    >>> from skvlm.datasets import load_imagenet
    >>> callable(load_imagenet)
    True
    """
    return load_paper_dataset(
        "imagenet", source, class_names=class_names, image_column=image_column
    )


def load_flowers102(source, *, class_names="paper", image_column=None):
    """Flowers102 as the paper uses it: see :func:`load_paper_dataset`.

    Examples
    --------
    >>> from skvlm.datasets import load_flowers102
    >>> callable(load_flowers102)
    True
    """
    return load_paper_dataset(
        "flowers", source, class_names=class_names, image_column=image_column
    )


def load_stanford_cars(source, *, class_names="paper", image_column=None):
    """StanfordCars as the paper uses it: see :func:`load_paper_dataset`.

    Examples
    --------
    >>> from skvlm.datasets import load_stanford_cars
    >>> callable(load_stanford_cars)
    True
    """
    return load_paper_dataset(
        "cars", source, class_names=class_names, image_column=image_column
    )


def load_caltech101(source, *, image_column=None):
    """Caltech101 as the paper uses it (100 classes): see :func:`load_paper_dataset`.

    Examples
    --------
    >>> from skvlm.datasets import load_caltech101
    >>> callable(load_caltech101)
    True
    """
    return load_paper_dataset("caltech", source, image_column=image_column)


# -- helpers ---------------------------------------------------------------------
def _check_name(name):
    if name not in PAPER_DATASETS:
        raise ValueError(
            f"Unknown data set {name!r}; the paper's are {list(PAPER_DATASETS)}."
        )


def _is_hf(source):
    return isinstance(source, Mapping) or (
        hasattr(source, "keys") and hasattr(source, "column_names")
    )


def _bunch(name, layout, train, test, names, image_column="image"):
    def split(data, target):
        return Bunch(data=data, target=np.asarray(target, dtype=int))

    return Bunch(
        train=split(*train),
        test=split(*test),
        target_names=list(names),
        image_column=image_column,
        layout=layout,
        DESCR=(
            f"{name} as in Zhang et al. (NeurIPS 2024), from the {layout} layout: "
            f"{len(train[1])} training and {len(test[1])} test images, "
            f"{len(set(names))} class names."
        ),
    )


def _images(folder):
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _require(path, what):
    if not path.exists():
        raise FileNotFoundError(
            f"{what}: '{path}' is missing. Pass the root folder that torchvision's "
            "data set was given (download=True leaves this layout), the paper's "
            "jsonl, or a datasets.DatasetDict."
        )
    return path


def _loadmat(path):
    from scipy.io import loadmat

    return loadmat(str(path), squeeze_me=True)


# -- the paper's jsonl -----------------------------------------------------------
def _paper_jsonl(name, path):
    if path.suffix == ".jsonl" and path.is_file():
        return path
    if path.is_dir() and (path / f"{name}.jsonl").is_file():
        return path / f"{name}.jsonl"
    return None


def _from_jsonl(name, path, class_names):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no rows.")
    beside = path.with_name(f"{path.stem}_classes.json")
    if beside.is_file():
        names = json.loads(beside.read_text())
    else:
        names = paper_class_names(name)
    index = {}
    for i, c in enumerate(names):
        index.setdefault(c, i)  # classes.index(label): a duplicate's first place
    unknown = sorted({r["label"] for r in rows} - set(index))
    if unknown:
        raise ValueError(
            f"{path} has labels missing from the class names: {unknown[:10]}. "
            f"Put {path.stem}_classes.json beside it."
        )
    base = _image_base(path.parent, rows[0]["image"])
    test_split = _TEST_SPLIT.get(name, "test")
    train, test = ([], []), ([], [])
    for row in rows:
        image = Path(row["image"])
        image = image if image.is_absolute() else base / image
        into = {"train": train, test_split: test}.get(row["split"])
        if into is not None:
            into[0].append(str(image))
            into[1].append(index[row["label"]])
    return _bunch(name, "paper", train, test, names)


def _image_base(folder, first):
    """The folder relative paths start from: the jsonl's, or its parent (the
    paper's ``./data/...`` paths are relative to the repository root)."""
    if Path(first).is_absolute() or (folder / first).exists():
        return folder
    if (folder.parent / first).exists():
        return folder.parent
    return folder


# -- torchvision's layouts ------------------------------------------------------
def _imagenet_folders(root, class_names):
    if not (root / "train").is_dir() and (root / "imagenet" / "train").is_dir():
        root = root / "imagenet"
    train_dir = _require(root / "train", "ImageNet's train folder")
    val_dir = _require(root / "val", "ImageNet's val folder")
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if class_names == "paper":
        names = paper_class_names("imagenet")
        if len(wnids) != len(names):
            raise ValueError(
                f"ImageNet: '{train_dir}' has {len(wnids)} class folders, the "
                f"paper's names are for {len(names)}. Pass class_names='source' "
                "for a subset."
            )
    else:
        names = _imagenet_devkit_names(root, wnids)
    index = {w: i for i, w in enumerate(wnids)}
    splits = []
    for folder in (train_dir, val_dir):
        paths, target = [], []
        for wnid in wnids:
            sub = folder / wnid
            if not sub.is_dir():
                continue
            files = _images(sub)
            paths += [str(p) for p in files]
            target += [index[wnid]] * len(files)
        splits.append((paths, target))
    return _bunch("imagenet", "torchvision", *splits, names)


def _imagenet_devkit_names(root, wnids):
    """torchvision's ``meta.bin`` (from the devkit), or Kaggle's synset mapping."""
    if (root / "meta.bin").is_file():
        import torch

        wnid_to_classes = torch.load(root / "meta.bin", weights_only=True)[0]
        return [", ".join(wnid_to_classes[w]) for w in wnids]
    mapping = root / "LOC_synset_mapping.txt"
    if mapping.is_file():
        pairs = dict(
            line.split(" ", 1) for line in mapping.read_text().splitlines() if line
        )
        return [pairs[w].strip() for w in wnids]
    raise FileNotFoundError(
        f"ImageNet: no devkit names under '{root}' (meta.bin, as torchvision's "
        "ImageNet writes it, or LOC_synset_mapping.txt). Use class_names='paper'."
    )


def _flowers_folders(root, class_names):
    base = root / "flowers-102" if (root / "flowers-102").is_dir() else root
    labels = _loadmat(_require(base / "imagelabels.mat", "Flowers102"))["labels"]
    setid = _loadmat(_require(base / "setid.mat", "Flowers102"))
    names = paper_class_names("flowers")
    if class_names == "source":
        names = [str(k) for k in range(1, len(names) + 1)]  # the .mat has none

    def split(ids):
        ids = sorted(int(i) for i in np.atleast_1d(ids))
        return (
            [str(base / "jpg" / f"image_{i:05d}.jpg") for i in ids],
            [int(labels[i - 1]) - 1 for i in ids],
        )

    train = np.concatenate(
        [np.atleast_1d(setid["trnid"]), np.atleast_1d(setid["valid"])]
    )
    return _bunch("flowers", "torchvision", split(train), split(setid["tstid"]), names)


def _cars_folders(root, class_names):
    base = root / "stanford_cars" if (root / "stanford_cars").is_dir() else root
    devkit = base / "devkit"
    meta = _loadmat(_require(devkit / "cars_meta.mat", "StanfordCars"))
    names = (
        paper_class_names("cars")
        if class_names == "paper"
        else [str(n) for n in np.atleast_1d(meta["class_names"])]
    )
    splits = []
    for annos, folder in (
        (devkit / "cars_train_annos.mat", base / "cars_train"),
        (base / "cars_test_annos_withlabels.mat", base / "cars_test"),
    ):
        rows = np.atleast_1d(_loadmat(_require(annos, "StanfordCars"))["annotations"])
        pairs = sorted((str(r["fname"]), int(r["class"]) - 1) for r in rows)
        splits.append(([str(folder / f) for f, _ in pairs], [c for _, c in pairs]))
    return _bunch("cars", "torchvision", *splits, names)


def _caltech_folders(root, class_names):
    base = root
    for candidate in (
        root / "caltech101" / "101_ObjectCategories",
        root / "101_ObjectCategories",
    ):
        if candidate.is_dir():
            base = candidate
            break
    folders = sorted(
        p for p in base.iterdir() if p.is_dir() and p.name not in _CALTECH_DROPPED
    )
    if not folders:
        _require(base / "101_ObjectCategories", "Caltech101")
    per_folder = [(_caltech_name(p.name), _images(p)) for p in folders]
    return _caltech_split(
        "torchvision", [(name, [str(f) for f in files]) for name, files in per_folder]
    )


def _caltech_name(folder):
    return _CALTECH_FOLDERS.get(folder, folder.replace("_", " "))


def _caltech_split(layout, per_folder, image_column="image"):
    """Half of each category for training (``round(n / 2)``, the paper's counts),
    drawn with a seeded generator: the same split on every run."""
    names = list(dict.fromkeys(name for name, _ in per_folder))
    index = {n: i for i, n in enumerate(names)}
    rng = random.Random(CALTECH_SEED)
    train, test = ([], []), ([], [])
    for name, items in per_folder:
        chosen = set(rng.sample(range(len(items)), round(len(items) / 2)))
        for i, item in enumerate(items):
            into = train if i in chosen else test
            into[0].append(item)
            into[1].append(index[name])
    return _bunch("caltech", layout, train, test, names, image_column)


# -- Hugging Face ------------------------------------------------------------------
def _from_huggingface(name, source, class_names, image_column):
    from .._inputs import HFDatasetView

    splits = list(source.keys())
    first = source[splits[0]]
    column = image_column or next(
        (c for c in ("image", "img") if c in first.column_names), None
    )
    label = next((c for c in ("label", "labels") if c in first.column_names), None)
    if column is None or label is None:
        raise ValueError(
            f"{name}: the dataset's columns are {first.column_names}; it needs an "
            "image column ('image' or 'img', or pass image_column) and a 'label' "
            "column."
        )
    source_names = list(first.features[label].names)

    if name == "caltech":
        labels = {split: list(source[split][label]) for split in splits}
        per_folder = []
        for k, folder in enumerate(source_names):
            if folder in _CALTECH_DROPPED:
                continue
            items = [
                (split, i)
                for split in splits
                for i, y in enumerate(labels[split])
                if y == k
            ]
            per_folder.append((_caltech_name(folder), items))
        bunch = _caltech_split("huggingface", per_folder, column)
        for part in (bunch.train, bunch.test):
            part.data = _hf_rows(source, part.data, HFDatasetView)
        return bunch

    test_name = "validation" if name == "imagenet" else "test"
    train_names = ["train"] if name == "imagenet" else ["train", "validation"]
    if test_name not in splits or "train" not in splits:
        raise ValueError(
            f"{name}: the DatasetDict has splits {splits}; it needs 'train' and "
            f"{test_name!r}."
        )
    names = source_names
    if class_names == "paper":
        names = paper_class_names(name)
        if len(source_names) != len(names):
            raise ValueError(
                f"{name}: the dataset has {len(source_names)} classes, the paper "
                f"{len(names)}; pass class_names='source'."
            )
    train_items = [
        (s, i) for s in train_names if s in splits for i in range(len(source[s]))
    ]
    test_items = [(test_name, i) for i in range(len(source[test_name]))]
    return _bunch(
        name,
        "huggingface",
        (
            _hf_rows(source, train_items, HFDatasetView),
            _hf_labels(source, train_items, label),
        ),
        (
            _hf_rows(source, test_items, HFDatasetView),
            _hf_labels(source, test_items, label),
        ),
        names,
        column,
    )


def _hf_rows(source, items, view):
    """One view over ``(split, row)`` pairs, in their order."""
    from datasets import concatenate_datasets

    parts, current, idx = [], None, []
    for split, i in items:
        if split != current and idx:
            parts.append(source[current].select(idx))
            idx = []
        current = split
        idx.append(i)
    if idx:
        parts.append(source[current].select(idx))
    if not parts:
        return view(source[next(iter(source.keys()))].select([]))
    return view(parts[0] if len(parts) == 1 else concatenate_datasets(parts))


def _hf_labels(source, items, label):
    columns = {}
    out = []
    for split, i in items:
        if split not in columns:
            columns[split] = source[split][label]
        out.append(columns[split][i])
    return out
