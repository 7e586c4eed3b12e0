"""Every accepted input form, every PIL mode, and every bad input's error."""

import io
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skvlm import ImageLoadError, VLMEmbeddingTransformer
from skvlm._inputs import as_items, image_key, load_image, to_rgb
from skvlm.models import EmbeddedModelWarning


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
        (
            "La",
            (100, 255),
            (100, 100, 100),
        ),  # premultiplied: PIL converts it to LA only
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


# -- containers that cannot work as X (issue 15, item 5) ---------------------------------
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_a_single_array_image_is_refused_with_how_to_wrap_it(clip_path, rgb, channels):
    image = np.zeros((20, 24, channels), np.uint8)
    vlm = VLMEmbeddingTransformer(clip_path)
    with pytest.raises(ValueError, match=rf"shape \(20, 24, {channels}\).*one image"):
        vlm.fit_transform(image)
    vlm.fit(None)
    message = _error_for(image, clip_path)
    assert "transform([image])" in message and "image[None]" in message
    # both suggested fixes work, and agree
    np.testing.assert_array_equal(vlm.transform([image]), vlm.transform(image[None]))


def test_iterators_are_refused_before_fit_consumes_them(clip_path, rgb):
    vlm = VLMEmbeddingTransformer(clip_path)
    for X in [(im for im in [rgb, rgb]), iter([rgb, rgb]), map(lambda im: im, [rgb])]:
        with pytest.raises(TypeError, match="can be read only once.*list\\(X\\)"):
            vlm.fit_transform(X)
    assert vlm.fit_transform([rgb, rgb]).shape[0] == 2


def test_sets_and_dicts_are_refused(clip_path, tmp_path, rgb):
    paths = []
    for name in ["a.png", "b.png", "c.png"]:
        rgb.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    vlm = VLMEmbeddingTransformer(clip_path)
    for X in [set(paths), frozenset(paths)]:
        with pytest.raises(TypeError, match="order is arbitrary.*sorted\\(X\\)"):
            vlm.fit_transform(X)
    with pytest.raises(TypeError, match=r"X is a dict.*list\(X.values\(\)\)"):
        vlm.fit_transform(dict.fromkeys(paths))


# -- decompression bombs and the pixel limit ----------------------------------------------
def _noise(size, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def pixel_limit(monkeypatch):
    """PIL's limit lowered to 1000 pixels: 40x40 is over it, 50x50 over twice it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


@pytest.mark.parametrize("size", [(40, 40), (50, 50)], ids=["over", "bomb"])
@pytest.mark.parametrize("form", ["path", "bytes"])
def test_images_over_the_pixel_limit_are_image_load_errors(
    clip_path, tmp_path, pixel_limit, size, form
):
    path = tmp_path / "big.png"
    _noise(size).save(path)
    item = str(path) if form == "path" else path.read_bytes()
    small = _noise((20, 20), seed=1)
    vlm = VLMEmbeddingTransformer(clip_path, pooling="mean")
    with pytest.raises(ImageLoadError, match="PIL.Image.MAX_IMAGE_PIXELS") as info:
        vlm.fit_transform([small, item])
    assert info.value.index == 1
    message = str(info.value)
    assert message.startswith("X[1]") and "decompression bomb" in message
    if form == "path":
        assert "big.png" in message
    if size == (40, 40):  # read from the header, before any decoding
        assert (
            "40x40 = 0.0 Mpx" in message and "MAX_IMAGE_PIXELS = 1_000_000" in message
        )
    # on_error="nan" makes it a NaN row, like any other unreadable image
    vlm.set_params(on_error="nan")
    with pytest.warns(UserWarning, match=r"indices \[1\]"):
        out = vlm.fit_transform([small, item])
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_raising_the_pixel_limit_admits_the_image(clip_path, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _noise((40, 40)).save(path)
    vlm = VLMEmbeddingTransformer(clip_path, pooling="mean").fit(None)
    expected = vlm.transform([_noise((40, 40))])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError):
        vlm.transform([path])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1600)  # the image's own size
    np.testing.assert_array_equal(vlm.transform([path]), expected)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # no limit, as in PIL
    np.testing.assert_array_equal(vlm.transform([path]), expected)


# -- a directory where an image should be -------------------------------------------------
@pytest.mark.parametrize("cache", [False, True])
def test_a_directory_goes_through_on_error(clip_path, rgb, tmp_path, cache):
    folder = tmp_path / "not_an_image"
    folder.mkdir()
    store = str(tmp_path / "store") if cache else None
    vlm = VLMEmbeddingTransformer(clip_path, cache=store)
    with pytest.raises(ImageLoadError, match="X\\[1\\].*not_an_image.*is a directory"):
        vlm.fit_transform([rgb, str(folder)])
    vlm.set_params(on_error="nan")
    with pytest.warns(UserWarning, match=r"indices \[1\]"):
        out = vlm.fit_transform([rgb, str(folder)])
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_image_key_of_a_directory_or_unreadable_file(tmp_path):
    with pytest.raises(ImageLoadError, match="X\\[4\\].*is a directory") as info:
        image_key(tmp_path, index=4)
    assert info.value.index == 4


# -- image_column and Hugging Face datasets (issue 15, item 11) ----------------------------
def test_image_column_reads_another_dataframe_column(clip_path, rgb):
    frame = pd.DataFrame({"picture": [rgb, rgb], "image": ["not", "images"]})
    vlm = VLMEmbeddingTransformer(clip_path, image_column="picture")
    np.testing.assert_array_equal(vlm.fit_transform(frame), vlm.transform([rgb, rgb]))
    message = _error_for(pd.DataFrame({"picture": [rgb]}), clip_path)
    assert "without an 'image' column" in message and "image_column=" in message


def test_hf_dataset_items_are_read_lazily_and_undecoded(rgb):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"photo": [rgb] * 3, "label": [0, 1, 0]})
    assert ds.features["photo"].decode  # a decoded Image feature by default
    items, _ = as_items(ds, image_column="photo")
    assert not isinstance(items, list) and len(items) == 3
    assert set(items[0]) == {"bytes", "path"}  # read on access, not decoded
    np.testing.assert_array_equal(np.asarray(load_image(items[2])), np.asarray(rgb))


def test_hf_dataset_in_cross_validation(clip_path):
    datasets = pytest.importorskip("datasets")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    from skvlm.datasets import HFDatasetView, load_digit_images

    digits = load_digit_images(n_class=2, n_per_class=6)
    ds = datasets.Dataset.from_dict({"img": digits.images, "label": digits.target})
    y = np.asarray(ds["label"])
    pipe = make_pipeline(
        VLMEmbeddingTransformer(clip_path, pooling="mean", image_column="img"),
        LogisticRegression(max_iter=1000),
    )
    with pytest.raises(TypeError):  # sklearn cannot index a Dataset: documented
        cross_val_score(pipe, ds, y, cv=2)
    view = HFDatasetView(ds)
    scores = cross_val_score(pipe, view, y, cv=2)
    # the same folds on the images themselves give the same scores
    frame = pd.DataFrame({"img": digits.images})
    np.testing.assert_array_equal(scores, cross_val_score(pipe, frame, y, cv=2))
    assert len(view[np.array([0, 3]), ...]) == 2
    assert len(view[np.arange(12) % 3 == 0]) == 4


def test_image_column_on_the_classifiers(clip_path):
    from skvlm import CLIPZeroShotClassifier, VLMGenerativeClassifier
    from skvlm.datasets import load_digit_images

    digits = load_digit_images(n_class=3, n_per_class=2)
    frame = pd.DataFrame({"photo": digits.images, "image": ["x"] * 6})
    names = list(digits.target_names)
    for clf in [
        CLIPZeroShotClassifier(clip_path, class_names=names, image_column="photo"),
        VLMGenerativeClassifier(
            "skvlm/tiny-llava", class_names=names, image_column="photo"
        ),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmbeddedModelWarning)
            clf.fit(frame, digits.target)
            np.testing.assert_array_equal(
                clf.predict_proba(frame), clf.predict_proba(digits.images)
            )


def _llava_expand2square(pil_img, background_color):
    """LLaVA's own ``expand2square`` (llava/mm_utils.py), copied as the reference."""
    from PIL import Image

    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


@pytest.mark.parametrize("size", [(7, 3), (3, 8), (5, 5), (1, 6), (9, 2)])
def test_pad_to_square_equals_llava_expand2square(size):
    from skvlm._inputs import pad_to_square

    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    mean = [0.48145466, 0.4578275, 0.40821073]  # CLIP's image_mean, as LLaVA uses
    expected = _llava_expand2square(image, tuple(int(x * 255) for x in mean))
    np.testing.assert_array_equal(
        np.asarray(pad_to_square(image, fill=mean)), np.asarray(expected)
    )


# -- one image-identity rule: the key covers what decides the pixels (issue 23) -----------
def _palette_image(seed, transparency=None):
    """A 32x32 P image: 16 index blocks, a random palette, optional transparency."""
    indices = np.arange(16, dtype=np.uint8).reshape(4, 4).repeat(8, 0).repeat(8, 1)
    image = Image.fromarray(indices, mode="P")
    palette = np.random.default_rng(seed).integers(0, 256, 768, dtype=np.uint8)
    image.putpalette(palette.tobytes())
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(lambda: _palette_image(1), id="another palette"),
        pytest.param(lambda: _palette_image(0, transparency=5), id="transparency"),
        pytest.param(
            lambda: _palette_image(0, transparency=bytes(range(0, 256, 16))),
            id="alpha per index",
        ),
    ],
)
def test_palette_images_with_the_same_indices_keep_their_own_vectors(
    clip_path, tmp_path, second
):
    first, second = _palette_image(0), second()
    assert first.tobytes() == second.tobytes()  # the same palette indices
    assert to_rgb(first).tobytes() != to_rgb(second).tobytes()  # other pixels
    assert image_key(first) != image_key(second)
    plain = VLMEmbeddingTransformer(clip_path, pooling="mean").fit(None)
    cached = VLMEmbeddingTransformer(clip_path, pooling="mean", cache=str(tmp_path))
    cached.fit(None)
    cached.transform([first])  # the store now holds the first image's vector
    np.testing.assert_allclose(
        cached.transform([second]), plain.transform([second]), atol=1e-6
    )


def test_the_same_pixels_share_a_key_in_every_in_memory_form(rgb):
    array = np.asarray(rgb)
    forms = [
        rgb,
        array,
        array / 255.0,
        array[..., None, :][:, :, 0],
        rgb.convert("RGBA"),
    ]
    assert len({image_key(form) for form in forms}) == 1
    quantised = rgb.convert("P")  # other colours than rgb, the same as its RGB form
    assert image_key(quantised) == image_key(quantised.convert("RGB"))
    assert image_key(quantised) != image_key(rgb)
    gray = rgb.convert("L")
    assert (
        image_key(gray) == image_key(np.asarray(gray)) == image_key(gray.convert("RGB"))
    )
    assert image_key(gray) != image_key(rgb)


def test_keys_of_decoded_images_follow_what_the_processor_receives():
    # I;16 and I hold 16-bit values; both go to the same 8-bit RGB image
    # (what the processor receives), so they share a key; other values do not.
    sixteen = Image.new("I;16", (4, 4), 257 * 10)
    assert image_key(sixteen) == image_key(Image.new("I", (4, 4), 257 * 10))
    assert image_key(sixteen) == image_key(Image.new("RGB", (4, 4), (10, 10, 10)))
    assert image_key(sixteen) != image_key(Image.new("I;16", (4, 4), 257 * 11))
    # Size is part of the key even when the pixel bytes agree.
    assert image_key(Image.new("RGB", (2, 8))) != image_key(Image.new("RGB", (8, 2)))
    # A bad array fails its key as it would fail decoding: naming the item.
    with pytest.raises(ImageLoadError, match=r"X\[3\].*\[0, 1\]"):
        image_key(np.full((4, 4), 2.0), index=3)


def test_a_file_rewritten_in_place_with_its_times_restored_is_read_again(
    clip_path, tmp_path
):
    # What cp -p, rsync -t --inplace and tar x do: other bytes, the same size,
    # inode and mtime. Only the ctime tells.
    path = tmp_path / "a.bmp"
    _noise((32, 32), seed=1).save(path)
    second = io.BytesIO()
    _noise((32, 32), seed=2).save(second, format="BMP")
    plain = VLMEmbeddingTransformer(clip_path, pooling="mean").fit(None)
    cached = VLMEmbeddingTransformer(
        clip_path, pooling="mean", cache=str(tmp_path / "s")
    )
    cached.fit(None)
    cached.transform([path])
    before = os.stat(path)
    with open(path, "r+b") as file:
        file.write(second.getvalue())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    np.testing.assert_allclose(
        cached.transform([path]), plain.transform([_noise((32, 32), seed=2)]), atol=1e-6
    )
