"""Every accepted input form, every PIL mode, and every bad input's error."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skvlm import ImageLoadError, VLMEmbeddingTransformer
from skvlm._inputs import as_items, image_key, load_image, to_rgb


@pytest.fixture
def rgb():
    data = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    return Image.fromarray(data)


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_form_of_the_same_image_gives_the_same_features(clip_path, rgb, tmp_path):
    path = tmp_path / "a.png"
    rgb.save(path)
    array = np.asarray(rgb)
    forms = [
        [str(path)],
        [path],
        [rgb],
        [array],
        [array / 255.0],
        [_png_bytes(rgb)],
        np.array([str(path)], dtype=object),
        pd.Series([path]),
        pd.DataFrame({"image": [path], "other": [1]}),
        array[None],  # a stack of images (N, H, W, C)
    ]
    vlm = VLMEmbeddingTransformer(clip_path, pooling="mean").fit(None)
    expected = vlm.transform([rgb])
    for X in forms:
        np.testing.assert_allclose(vlm.transform(X), expected, atol=1e-5)


def test_grayscale_stack_and_hx_wx1_arrays(rgb):
    gray = np.asarray(rgb.convert("L"))
    assert load_image(gray).mode == "RGB"
    assert load_image(gray[..., None]).getpixel((0, 0)) == (gray[0, 0],) * 3
    items, _ = as_items(np.stack([gray, gray]))
    assert len(items) == 2


def test_hf_dataset_input(clip_path, rgb):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": [rgb, rgb]}, features=None)
    out = VLMEmbeddingTransformer(clip_path).fit_transform(ds)
    assert out.shape[0] == 2


@pytest.mark.parametrize(
    "mode, fill, expected",
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("LA", (100, 0), (255, 255, 255)),  # fully transparent -> white background
        ("LA", (100, 255), (100, 100, 100)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 257 * 10, (10, 10, 10)),
        ("I", 257 * 200, (200, 200, 200)),
        ("F", 0.5, (128, 128, 128)),
        ("F", 200.0, (200, 200, 200)),
    ],
)
def test_every_pil_mode_converts_to_rgb(mode, fill, expected):
    image = Image.new(mode, (3, 2), fill)
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (3, 2)
    assert out.getpixel((1, 1)) == expected


def test_palette_image_with_and_without_transparency():
    p = Image.new("P", (2, 2), 0)
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert to_rgb(p).getpixel((0, 0)) == (10, 20, 30)
    p.info["transparency"] = 0
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)


# -- bad input -------------------------------------------------------------------------


def _error_for(X, clip_path):
    vlm = VLMEmbeddingTransformer(clip_path).fit(None)
    with pytest.raises((ImageLoadError, TypeError, ValueError)) as info:
        vlm.transform(X)
    return str(info.value)


def test_missing_file_names_index_and_path(clip_path, rgb, tmp_path):
    message = _error_for([rgb, str(tmp_path / "gone.jpg")], clip_path)
    assert "X[1]" in message and "gone.jpg" in message and "no such file" in message


def test_unreadable_file(clip_path, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    message = _error_for([bad], clip_path)
    assert "X[0]" in message and "notes.jpg" in message and "PIL can read" in message


def test_truncated_file(clip_path, rgb, tmp_path):
    big = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (200, 200, 3), np.uint8)
    )
    data = io.BytesIO()
    big.save(data, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    message = _error_for([rgb, rgb, path], clip_path)
    assert "X[2]" in message and "cut.jpg" in message and "truncated" in message


def test_zero_size_and_nan_and_range_and_type_errors(clip_path):
    assert "zero size" in _error_for([np.zeros((0, 4, 3), np.uint8)], clip_path)
    nan = np.full((4, 4, 3), np.nan)
    assert "NaN" in _error_for([nan], clip_path)
    assert "Divide by 255" in _error_for([np.full((4, 4, 3), 7.0)], clip_path)
    assert "unsupported type int" in _error_for([3], clip_path)
    assert "shape (4, 4, 2)" in _error_for([np.zeros((4, 4, 2), np.uint8)], clip_path)


def test_empty_and_single_item_and_missing_column(clip_path, rgb):
    assert "X is empty" in _error_for([], clip_path)
    assert "Wrap it in a list" in _error_for(rgb, clip_path)
    assert "Wrap it in a list" in _error_for("a.jpg", clip_path)
    assert "without an 'image' column" in _error_for(
        pd.DataFrame({"x": [1]}), clip_path
    )


def test_on_error_nan_returns_nan_rows_and_warns_once(clip_path, rgb, tmp_path):
    X = [rgb, str(tmp_path / "gone.png"), rgb, b"garbage"]
    vlm = VLMEmbeddingTransformer(clip_path, on_error="nan", batch_size=2).fit(None)
    with pytest.warns(UserWarning, match=r"2 image\(s\).*\[1, 3\]") as record:
        out = vlm.transform(X)
    assert len(record) == 1
    assert np.isnan(out[[1, 3]]).all() and np.isfinite(out[[0, 2]]).all()
    np.testing.assert_allclose(out[0], vlm.transform([rgb])[0], atol=1e-6)


def test_on_error_nan_with_a_whole_failed_batch(clip_path, rgb, tmp_path):
    vlm = VLMEmbeddingTransformer(clip_path, on_error="nan", batch_size=1).fit(None)
    with pytest.warns(UserWarning):
        out = vlm.transform([str(tmp_path / "x.png"), rgb])
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def test_image_key_follows_content_not_name(rgb, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    rgb.save(a)
    b.write_bytes(a.read_bytes())
    assert image_key(a) == image_key(b) == image_key(a.read_bytes())
    edited = rgb.copy()
    edited.putpixel(
        (0, 0), (0, 0, 0) if rgb.getpixel((0, 0)) != (0, 0, 0) else (1, 1, 1)
    )
    edited.save(b)
    assert image_key(b) != image_key(a)
    assert image_key(rgb) != image_key(edited)
    assert image_key(np.asarray(rgb)) == image_key(np.asarray(rgb).copy())
