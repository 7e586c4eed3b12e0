"""Tests of skvlm.datasets: digit rendering and the image folder / CSV loaders."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from skvlm.datasets import load_digit_images, load_image_csv, load_image_folder


def pixels(images):
    return np.stack([np.asarray(img) for img in images])


# ---------------------------------------------------------------- digit images


@pytest.mark.parametrize("size", [8, 24, 32])
def test_digit_images_shapes_modes_and_labels(size):
    digits = load_digit_images(size=size)
    reference = load_digits()
    assert len(digits.images) == 1797 and digits.data is digits.images
    assert {img.mode for img in digits.images} == {"RGB"}
    assert {img.size for img in digits.images} == {(size, size)}
    np.testing.assert_array_equal(digits.target, reference.target)
    assert digits.target.dtype == np.int64
    assert list(digits.target_names) == [
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
    ]
    assert digits.captions[3] == "a photo of the digit three"
    assert digits.captions[13] == f"a photo of the digit {digits.target_names[3]}"
    assert digits.frame is None and "bicubic" in digits.DESCR


def test_clean_rendering_equals_pil_bicubic_resize():
    """Independent reference: PIL resizes each float image itself."""
    size = 32
    digits = load_digit_images(size=size)
    raw = load_digits().images
    for i in [0, 5, 100, 1796]:
        ref = Image.fromarray((raw[i] / 16).astype(np.float32), "F").resize(
            (size, size), Image.Resampling.BICUBIC
        )
        ref = np.rint(np.clip(np.asarray(ref), 0, 1) * 255)
        got = np.asarray(digits.images[i]).astype(float)
        for channel in range(3):  # grey: the three channels are equal
            assert np.abs(got[..., channel] - ref).max() <= 1


def test_white_on_black_and_invert():
    clean = pixels(load_digit_images(n_per_class=3).images).astype(int)
    inverted = pixels(load_digit_images(n_per_class=3, invert=True).images)
    assert np.bincount(clean.ravel()).argmax() == 0  # black background
    assert clean.max() >= 250  # white ink
    np.testing.assert_array_equal(inverted, 255 - clean)


def test_variation_is_deterministic_and_seeded():
    a = pixels(load_digit_images(variation=0.5, n_per_class=4, random_state=1).images)
    b = pixels(load_digit_images(variation=0.5, n_per_class=4, random_state=1).images)
    c = pixels(load_digit_images(variation=0.5, n_per_class=4, random_state=2).images)
    clean = pixels(load_digit_images(n_per_class=4).images)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, clean)
    assert not np.all(a[..., 0] == a[..., 1])  # tinted: no longer grey
    rng = np.random.RandomState(1)
    d = pixels(load_digit_images(variation=0.5, n_per_class=4, random_state=rng).images)
    np.testing.assert_array_equal(a, d)


def test_variation_zero_ignores_random_state():
    a = pixels(load_digit_images(n_per_class=2, random_state=0).images)
    b = pixels(load_digit_images(n_per_class=2, random_state=123).images)
    np.testing.assert_array_equal(a, b)


def test_variation_strength_grows_with_variation():
    clean = pixels(load_digit_images(n_per_class=10).images).astype(float)
    diffs = [
        np.abs(
            pixels(load_digit_images(variation=v, n_per_class=10).images) - clean
        ).mean()
        for v in (0.2, 1.0)
    ]
    assert 0 < diffs[0] < diffs[1]


def test_n_per_class_and_n_class_keep_load_digits_order():
    digits = load_digit_images(n_class=4, n_per_class=5)
    reference = load_digits(n_class=4)
    np.testing.assert_array_equal(np.bincount(digits.target), [5, 5, 5, 5])
    index = np.concatenate(
        [np.flatnonzero(reference.target == k)[:5] for k in range(4)]
    )
    full = load_digit_images(n_class=4)
    np.testing.assert_array_equal(
        pixels(digits.images), pixels([full.images[i] for i in index])
    )
    assert list(digits.target_names) == ["zero", "one", "two", "three"]


def test_as_frame_and_return_x_y():
    digits = load_digit_images(n_per_class=2, as_frame=True)
    assert list(digits.frame.columns) == ["image", "caption", "target"]
    assert list(digits.data.columns) == ["image"]
    assert isinstance(digits.target, pd.Series)
    assert digits.frame["caption"].iloc[0] == "a photo of the digit zero"
    X, y = load_digit_images(n_per_class=2, return_X_y=True)
    assert isinstance(X, list) and len(X) == 20 and y.tolist() == sorted(y.tolist())
    X, y = load_digit_images(n_per_class=2, return_X_y=True, as_frame=True)
    assert X.shape == (20, 1) and y.name == "target"


def test_caption_template():
    digits = load_digit_images(n_per_class=1, caption_template="{}!")
    assert digits.captions[:2] == ["zero!", "one!"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, r"'size' parameter .* int in the range \[1, inf\)"),
        ({"size": 2.5}, "'size' parameter .* int"),
        ({"variation": 1.5}, r"'variation' parameter .* \[0\.0, 1\.0\]"),
        ({"variation": -0.1}, "variation"),
        ({"n_class": 11}, r"'n_class' parameter .* \[1, 10\]"),
        ({"n_per_class": 500}, r"n_per_class must be an int in \[1, 174\]"),
        ({"n_per_class": 0}, "n_per_class"),
    ],
)
def test_digit_images_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digit_images(**kwargs)


# ---------------------------------------------------------------- image folder


def save_png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


def make_bad_files(folder):
    """A text file named .png and a PNG cut after its header."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.png"
    text.write_text("not an image")
    save_png(folder / "full.png")
    cut = folder / "cut.png"
    cut.write_bytes((folder / "full.png").read_bytes()[:20])
    (folder / "full.png").unlink()
    return sorted([str(text), str(cut)])


def test_image_folder_happy_path(tmp_path):
    save_png(tmp_path / "dog" / "b.png")
    save_png(tmp_path / "dog" / "a.PNG")
    save_png(tmp_path / "cat" / "nested" / "c.png")
    save_png(tmp_path / "cat" / "z.png")
    (tmp_path / "cat" / "readme.txt").write_text("ignored")
    (tmp_path / "cat" / ".hidden.png").write_text("ignored")
    (tmp_path / ".git").mkdir()
    data = load_image_folder(tmp_path)
    rel = [Path(p).relative_to(tmp_path).as_posix() for p in data.paths]
    assert rel == ["cat/nested/c.png", "cat/z.png", "dog/a.PNG", "dog/b.png"]
    assert data.target.tolist() == [0, 0, 1, 1]
    assert data.target_names.tolist() == ["cat", "dog"]
    assert all(isinstance(p, str) for p in data.paths) and data.data is data.paths
    X, y = load_image_folder(tmp_path, return_X_y=True, as_frame=True)
    assert list(X.columns) == ["image"] and y.tolist() == [0, 0, 1, 1]
    frame = load_image_folder(tmp_path, as_frame=True).frame
    assert frame["label"].tolist() == ["cat", "cat", "dog", "dog"]


def test_image_folder_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*subfolder"):
        load_image_folder(tmp_path / "nowhere")


def test_image_folder_given_a_file(tmp_path):
    save_png(tmp_path / "x.png")
    with pytest.raises(NotADirectoryError, match="x.png.*load_image_csv"):
        load_image_folder(tmp_path / "x.png")


def test_image_folder_empty(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders.*own subfolder"):
        load_image_folder(tmp_path)


def test_image_folder_one_class(tmp_path):
    save_png(tmp_path / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"only the class \['cat'\].*two classes"):
        load_image_folder(tmp_path)


def test_image_folder_class_without_images(tmp_path):
    save_png(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    (tmp_path / "eel").mkdir()
    (tmp_path / "eel" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"2 class folder.*dog.*eel.*extensions=") as e:
        load_image_folder(tmp_path)
    assert "cat" not in str(e.value).split("hold no image")[1]


def test_image_folder_lists_all_unreadable_files(tmp_path):
    save_png(tmp_path / "cat" / "good.png")
    save_png(tmp_path / "dog" / "good.png")
    bad = make_bad_files(tmp_path / "dog") + make_bad_files(tmp_path / "cat")
    with pytest.raises(ValueError, match="4 image file.*cannot be read") as e:
        load_image_folder(tmp_path)
    for path in bad:
        assert path in str(e.value)
    assert "on_error='skip'" in str(e.value)
    with pytest.warns(UserWarning, match="Skipped 4 unreadable") as w:
        data = load_image_folder(tmp_path, on_error="skip")
    assert all(path in str(w[0].message) for path in bad)
    assert [Path(p).name for p in data.paths] == ["good.png", "good.png"]
    assert data.target.tolist() == [0, 1]
    # Without verification the bad files go through (decoded later).
    assert len(load_image_folder(tmp_path, verify=False).paths) == 6


def test_image_folder_skip_leaving_a_class_empty(tmp_path):
    save_png(tmp_path / "cat" / "good.png")
    make_bad_files(tmp_path / "dog")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"\['dog'\]"):
        load_image_folder(tmp_path, on_error="skip")


def test_image_folder_warns_on_loose_images(tmp_path):
    save_png(tmp_path / "cat" / "a.png")
    save_png(tmp_path / "dog" / "a.png")
    save_png(tmp_path / "loose.png")
    with pytest.warns(UserWarning, match="1 image file.*loose.png"):
        load_image_folder(tmp_path)


def test_image_folder_extensions(tmp_path):
    save_png(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "dog" / "a.bmp")
    with pytest.raises(ValueError, match="dog"):
        load_image_folder(tmp_path, extensions=["png"])
    assert len(load_image_folder(tmp_path, extensions=[".png", "BMP"]).paths) == 2


def test_bad_on_error(tmp_path):
    with pytest.raises(ValueError, match="'on_error' parameter .* among") as e:
        load_image_folder(tmp_path, on_error="ignore")
    assert "'raise'" in str(e.value) and "'skip'" in str(e.value)  # the subset


# ---------------------------------------------------------------- CSV manifest


def write_csv(path, rows, header="image,label"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_image_csv_paths_relative_to_csv_or_root(tmp_path):
    save_png(tmp_path / "imgs" / "a.png")
    save_png(tmp_path / "imgs" / "b.png")
    other = tmp_path / "elsewhere" / "c.png"
    save_png(other)
    csv = write_csv(
        tmp_path / "list.csv", ["imgs/a.png,dog", "imgs/b.png,cat", f"{other},dog"]
    )
    data = load_image_csv(csv)
    assert data.paths == [
        str(tmp_path / "imgs" / "a.png"),
        str(tmp_path / "imgs" / "b.png"),
        str(other),
    ]
    assert data.target_names.tolist() == ["cat", "dog"]
    assert data.target.tolist() == [1, 0, 1]
    sub = tmp_path / "meta"
    sub.mkdir()
    csv2 = write_csv(sub / "list.csv", ["a.png,dog", "b.png,cat"])
    data = load_image_csv(csv2, root=tmp_path / "imgs")
    assert data.paths[0] == str(tmp_path / "imgs" / "a.png")
    X, y = load_image_csv(csv2, root=tmp_path / "imgs", return_X_y=True, as_frame=True)
    assert X["image"].tolist() == data.paths and y.tolist() == [1, 0]


def test_image_csv_custom_columns_and_numeric_labels(tmp_path):
    for name in "abc":
        save_png(tmp_path / f"{name}.png")
    csv = write_csv(
        tmp_path / "l.csv",
        ["a.png,x,10", "b.png,y,2", "c.png,z,1"],
        header="file,other,digit",
    )
    data = load_image_csv(csv, "file", "digit")
    assert data.target_names.tolist() == ["1", "2", "10"]
    assert data.target.tolist() == [2, 1, 0]


def test_image_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_image_csv(tmp_path / "nope.csv")


def test_image_csv_missing_columns_lists_available(tmp_path):
    csv = write_csv(tmp_path / "l.csv", ["a.png,cat"], header="path,class")
    with pytest.raises(KeyError, match=r"\['image', 'label'\].*\['path', 'class'\]"):
        load_image_csv(csv)


def test_image_csv_missing_images_listed(tmp_path):
    save_png(tmp_path / "a.png")
    save_png(tmp_path / "b.png")
    csv = write_csv(
        tmp_path / "l.csv", ["a.png,cat", "gone.png,dog", "b.png,dog", "lost.png,cat"]
    )
    with pytest.raises(ValueError, match="2 image file") as e:
        load_image_csv(csv)
    message = str(e.value)
    assert "line 3" in message and "gone.png" in message
    assert "line 5" in message and "lost.png" in message and "file not found" in message
    with pytest.warns(UserWarning, match="line 3.*gone.png"):
        data = load_image_csv(csv, on_error="skip")
    assert data.target.tolist() == [0, 1]


def test_image_csv_unreadable_images_listed(tmp_path):
    save_png(tmp_path / "a.png")
    save_png(tmp_path / "b.png")
    bad = make_bad_files(tmp_path / "bad")
    rows = ["a.png,cat", "b.png,dog"] + [f"{p},dog" for p in bad]
    with pytest.raises(ValueError, match="2 image file.*cannot be read") as e:
        load_image_csv(write_csv(tmp_path / "l.csv", rows))
    assert all(p in str(e.value) for p in bad)


def test_image_csv_label_without_image(tmp_path):
    save_png(tmp_path / "a.png")
    csv = write_csv(tmp_path / "l.csv", ["a.png,cat", ",dog", "", "a.png,dog", " ,eel"])
    with pytest.raises(ValueError, match=r"2 row.*label but no image.*\[3, 6\]"):
        load_image_csv(csv)


def test_image_csv_image_without_label(tmp_path):
    save_png(tmp_path / "a.png")
    csv = write_csv(tmp_path / "l.csv", ["a.png,cat", "a.png,", "a.png,dog"])
    with pytest.raises(ValueError, match=r"1 row.*image but no label.*\[3\]"):
        load_image_csv(csv)


def test_image_csv_one_class(tmp_path):
    save_png(tmp_path / "a.png")
    csv = write_csv(tmp_path / "l.csv", ["a.png,cat", "a.png,cat"])
    with pytest.raises(ValueError, match=r"only the class \['cat'\].*'label' column"):
        load_image_csv(csv)


def test_image_csv_blank_rows_are_ignored(tmp_path):
    save_png(tmp_path / "a.png")
    csv = write_csv(tmp_path / "l.csv", ["a.png,cat", ",", "a.png,dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image_csv(csv).target.tolist() == [0, 1]


def test_image_csv_with_byte_order_mark(tmp_path):
    save_png(tmp_path / "a.png")
    csv = tmp_path / "l.csv"
    csv.write_text("image,label\na.png,cat\na.png,dog\n", encoding="utf-8-sig")
    assert load_image_csv(csv).target_names.tolist() == ["cat", "dog"]


# ------------------------------------------------------- the paper's four data sets
# Tiny fake layouts (tests/paper_layouts.py), as torchvision leaves them on disk.


def test_paper_class_names_are_the_papers():
    from skvlm.datasets import paper_class_names

    sizes = {"imagenet": 1000, "flowers": 102, "cars": 196, "caltech": 100}
    for name, size in sizes.items():
        assert len(paper_class_names(name)) == size
    imagenet = paper_class_names("imagenet")
    assert [i for i, n in enumerate(imagenet) if n == "missile"] == [657, 744]
    assert [i for i, n in enumerate(imagenet) if n == "sunglasses"] == [836, 837]
    with pytest.raises(ValueError, match="the paper's are"):
        paper_class_names("mnist")


def test_caltech101_from_torchvision_layout(tmp_path):
    from paper_layouts import make_caltech

    from skvlm.datasets import load_caltech101, paper_class_names

    make_caltech(tmp_path, per_folder=4)
    data = load_caltech101(tmp_path)
    # background dropped, Faces + Faces_easy -> "face", the paper's renames
    assert data.target_names == ["face", "leopard", "accordion", "car side"]
    assert set(data.target_names) <= set(paper_class_names("caltech"))
    folders = {Path(p).parent.name for p in [*data.train.data, *data.test.data]}
    assert "BACKGROUND_Google" not in folders and {"Faces", "Faces_easy"} <= folders
    # round(n / 2) of each folder for training: 4 -> 2, 5 -> 2 (half to even)
    per_folder = {"Faces": (5, 2), "Faces_easy": (4, 2), "Leopards": (5, 2)}
    for folder, (n, n_train) in per_folder.items():
        train = [p for p in data.train.data if Path(p).parent.name == folder]
        test = [p for p in data.test.data if Path(p).parent.name == folder]
        assert (len(train) + len(test), len(train)) == (n, n_train)
    face = data.target_names.index("face")
    assert all(
        (Path(p).parent.name in ("Faces", "Faces_easy")) == (t == face)
        for p, t in zip(data.train.data, data.train.target, strict=True)
    )
    again = load_caltech101(tmp_path)  # seeded: the same split on every run
    assert again.train.data == data.train.data
    # the same root given at its inner folder
    inner = load_caltech101(tmp_path / "caltech101" / "101_ObjectCategories")
    assert inner.train.data == data.train.data


def test_flowers102_from_torchvision_layout(tmp_path):
    from paper_layouts import make_flowers

    from skvlm.datasets import load_flowers102, paper_class_names

    make_flowers(tmp_path, labels=(77, 1, 2))
    data = load_flowers102(tmp_path)
    names = paper_class_names("flowers")
    assert data.target_names == names and names[76] == "passion flower"
    # the paper's train split is torchvision's train + val; test is test
    assert len(data.train.data) == 12 and len(data.test.data) == 9
    assert Path(data.train.data[0]).name == "image_00001.jpg"
    assert data.train.target[:4].tolist() == [76, 76, 76, 76]
    assert sorted(set(data.test.target.tolist())) == [0, 1, 76]
    assert data.train.data == sorted(data.train.data)  # the paper's jsonl order
    assert all(Path(p).exists() for p in data.test.data)


def test_stanford_cars_from_torchvision_layout(tmp_path):
    from paper_layouts import make_cars

    from skvlm.datasets import load_stanford_cars, paper_class_names

    _, devkit = make_cars(tmp_path, classes=(1, 2, 196))
    data = load_stanford_cars(tmp_path)
    assert data.target_names == paper_class_names("cars")
    assert data.train.target.tolist() == [0, 0, 0, 1, 1, 1, 195, 195, 195]
    assert data.test.target.tolist() == [0, 0, 1, 1, 195, 195]
    assert Path(data.train.data[0]).parent.name == "cars_train"
    assert Path(data.test.data[0]).parent.name == "cars_test"
    source = load_stanford_cars(tmp_path, class_names="source")
    assert source.target_names == devkit


def test_imagenet_from_torchvision_layout(tmp_path):
    from paper_layouts import IMAGENET_USED, WNIDS, make_imagenet

    from skvlm.datasets import load_imagenet, paper_class_names

    make_imagenet(tmp_path, n_train=3, n_val=2)
    data = load_imagenet(tmp_path)
    assert data.target_names == paper_class_names("imagenet")
    assert sorted(set(data.train.target.tolist())) == list(IMAGENET_USED)
    assert len(data.train.data) == 12 and len(data.test.data) == 8
    assert Path(data.test.data[0]).parts[-3:-1] == ("val", WNIDS[0])
    devkit = load_imagenet(tmp_path, class_names="source")
    assert devkit.target_names[657] == "devkit 657, synonym 657"


def test_paper_jsonl_layout(tmp_path):
    from paper_layouts import make_paper_jsonl

    from skvlm.datasets import load_paper_dataset

    # the paper's paths are relative to the repository root: ./data/...
    data_dir = tmp_path / "data"
    image = data_dir / "Caltech101" / "101_ObjectCategories" / "bonsai" / "a.jpg"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(image)
    rows = [
        {"image": "./data/Caltech101/101_ObjectCategories/bonsai/a.jpg",
         "label": "bonsai", "split": "train"},
        {"image": "./data/Caltech101/101_ObjectCategories/bonsai/a.jpg",
         "label": "face", "split": "test"},
    ]  # fmt: skip
    path = make_paper_jsonl(data_dir, "caltech", rows)
    data = load_paper_dataset("caltech", path)
    assert Path(data.train.data[0]).resolve() == image.resolve()
    names = data.target_names
    assert names[data.train.target[0]] == "bonsai" and data.test.target.tolist() == [0]
    # ImageNet: split "valid" is the test split; a duplicate name -> its first index
    rows = [
        {"image": "x.png", "label": "missile", "split": "valid"},
        {"image": "y.png", "label": "tench", "split": "train"},
    ]
    make_paper_jsonl(tmp_path / "imagenet", "imagenet", rows)
    imagenet = load_paper_dataset("imagenet", tmp_path / "imagenet")
    assert imagenet.test.target.tolist() == [657]
    assert imagenet.train.target.tolist() == [0]
    bad = [{"image": "x.png", "label": "unicorn", "split": "train"}]
    make_paper_jsonl(tmp_path / "bad", "flowers", bad)
    with pytest.raises(ValueError, match="unicorn"):
        load_paper_dataset("flowers", tmp_path / "bad")


def test_hugging_face_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    from skvlm.datasets import HFDatasetView, load_paper_dataset, paper_class_names

    def split(labels, names):
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        images = [Image.new("RGB", (8, 8), (i, 0, 0)) for i in range(len(labels))]
        return datasets.Dataset.from_dict(
            {"image": images, "label": labels}, features=features
        )

    flower_names = [f"class {k}" for k in range(102)]
    flowers = datasets.DatasetDict(
        train=split([0, 1], flower_names),
        validation=split([2], flower_names),
        test=split([0, 1, 2], flower_names),
    )
    data = load_paper_dataset("flowers", flowers)
    assert isinstance(data.train.data, HFDatasetView)
    assert len(data.train.data) == 3 and data.train.target.tolist() == [0, 1, 2]
    assert data.target_names == paper_class_names("flowers")
    assert (
        load_paper_dataset("flowers", flowers, class_names="source").target_names
        == flower_names
    )
    with pytest.raises(ValueError, match="class_names='source'"):
        load_paper_dataset(
            "flowers", datasets.DatasetDict(train=split([0], ["a", "b"]),
                                            test=split([1], ["a", "b"]))
        )  # fmt: skip
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "ant"]
    caltech = datasets.DatasetDict(train=split([0, 1, 1, 2, 3, 3, 4, 4], folders))
    data = load_paper_dataset("caltech", caltech)
    assert data.target_names == ["face", "leopard", "ant"]
    assert len(data.train.data) + len(data.test.data) == 7  # background dropped
    assert sorted([*data.train.target, *data.test.target]) == [0, 0, 0, 1, 1, 2, 2]
