"""Tiny fake copies of the on-disk layouts of the paper's four data sets, as
torchvision leaves them (``root`` of ``torchvision.datasets.X(root, download=True)``),
for tests of ``skvlm.datasets.load_paper_dataset`` and ``scripts/paper_table.py``.
Images are 12-px squares of random colour; nothing is downloaded."""

import json

import numpy as np
import torch
from PIL import Image
from scipy.io import savemat

from skvlm.datasets import paper_class_names

WNIDS = [f"n{10000000 + i:08d}" for i in range(1000)]
# ImageNet classes with images: tench, goldfish, and both "missile" classes
IMAGENET_USED = (0, 1, 657, 744)


def _image(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (12 + seed % 5, 12)  # not square: image_aspect matters
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def make_caltech(root, per_folder=4):
    """caltech101/101_ObjectCategories with the folders the paper renames, merges
    and drops, and two plain ones."""
    base = root / "caltech101" / "101_ObjectCategories"
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "accordion"]
    folders += ["car_side"]
    for k, folder in enumerate(folders):
        for i in range(per_folder + k % 2):
            _image(base / folder / f"image_{i + 1:04d}.jpg", 100 * k + i)
    return root


def make_flowers(root, labels=(77, 1, 2)):
    """flowers-102: jpg/, imagelabels.mat (1-based labels), setid.mat; per class
    two train, two val and three test images."""
    base = root / "flowers-102"
    image_labels, trn, val, tst = [], [], [], []
    for label in labels:
        for part in (trn, trn, val, val, tst, tst, tst):
            image_labels.append(label)
            part.append(len(image_labels))
    for i in range(1, len(image_labels) + 1):
        _image(base / "jpg" / f"image_{i:05d}.jpg", i)
    savemat(base / "imagelabels.mat", {"labels": np.array([image_labels])})
    savemat(
        base / "setid.mat",
        {"trnid": np.array([trn]), "valid": np.array([val]), "tstid": np.array([tst])},
    )
    return root


def _annotations(rows):
    dtype = [("fname", "O"), ("class", "O")]
    return np.array([(f, np.uint8(c)) for f, c in rows], dtype=dtype)


def make_cars(root, classes=(1, 2, 196)):
    """stanford_cars: devkit (meta, train annotations), the test annotations with
    labels, cars_train/ and cars_test/; three train and two test images a class."""
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    devkit_names = [f"Make {k} Model {2000 + k % 13}" for k in range(1, 197)]
    savemat(
        base / "devkit" / "cars_meta.mat",
        {"class_names": np.array(devkit_names, dtype=object)},
    )
    train, test = [], []
    for c in classes:
        train += [(f"{len(train) + 1:05d}.jpg", c) for _ in range(3)]
        test += [(f"{len(test) + 1:05d}.jpg", c) for _ in range(2)]
        train = [(f"{i + 1:05d}.jpg", c) for i, (_, c) in enumerate(train)]
        test = [(f"{i + 1:05d}.jpg", c) for i, (_, c) in enumerate(test)]
    savemat(
        base / "devkit" / "cars_train_annos.mat", {"annotations": _annotations(train)}
    )
    savemat(
        base / "cars_test_annos_withlabels.mat", {"annotations": _annotations(test)}
    )
    for i, (f, _) in enumerate(train):
        _image(base / "cars_train" / f, 1000 + i)
    for i, (f, _) in enumerate(test):
        _image(base / "cars_test" / f, 2000 + i)
    return root, devkit_names


def make_imagenet(root, n_train=3, n_val=2):
    """train/<wnid>/ and val/<wnid>/ for all 1000 classes (images in a few) and
    torchvision's meta.bin (wnid -> devkit names)."""
    for k in range(1000):
        (root / "train" / WNIDS[k]).mkdir(parents=True)
        (root / "val" / WNIDS[k]).mkdir(parents=True)
    for k in IMAGENET_USED:
        for i in range(n_train):
            _image(root / "train" / WNIDS[k] / f"{WNIDS[k]}_{i}.JPEG", 10 * k + i)
        for i in range(n_val):
            _image(root / "val" / WNIDS[k] / f"val_{k}_{i}.JPEG", 20000 + 10 * k + i)
    meta = {w: (f"devkit {k}", f"synonym {k}") for k, w in enumerate(WNIDS)}
    torch.save((meta, []), root / "meta.bin")
    return root


def make_paper_jsonl(root, name, rows, classes=None):
    """``{name}.jsonl`` (and ``{name}_classes.json``) in the paper's layout."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if classes is not None:
        (root / f"{name}_classes.json").write_text(json.dumps(classes))
    return root / f"{name}.jsonl"


def make_all(root):
    """The four layouts side by side under ``root``: what ``paper_table.py --data``
    takes."""
    make_caltech(root)
    make_flowers(root)
    make_cars(root)
    make_imagenet(root / "imagenet")
    return root


__all__ = [
    "IMAGENET_USED",
    "WNIDS",
    "make_all",
    "make_caltech",
    "make_cars",
    "make_flowers",
    "make_imagenet",
    "make_paper_jsonl",
    "paper_class_names",
]
