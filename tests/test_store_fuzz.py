"""Property-based fuzzing of the store: never another image's vector (issue 23).

Random PIL images in every mode (palettes, transparency, bit depths, value
ranges), arrays of every dtype and shape, encoded files (good, truncated,
corrupt), paths, ``datasets`` rows and mixed containers go through a cached and
an uncached transform. The property: each row of the cached one equals the
uncached one (which never reads a key), or both rows are NaN and the warning
names exactly those rows; under ``on_error="raise"`` an error is an
``ImageLoadError`` that names a row that is bad. One store is shared by every
example, so a key that two different images share shows up as a wrong row.

A second test mutates files between calls (rewrite, same-size rewrite in
place, truncation, replacement, a copy of another file, restored times), with
the racy-clean rule as shipped and with every file counted as settled, so the
memo is used as much as it can be.

The budget is fixed (``max_examples``, no deadline); a failure prints the
example that broke the property.
"""

import io
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skvlm import ImageLoadError, VLMEmbeddingTransformer, _filestate

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MODES = [
    "1", "L", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "I", "I;16",
    "I;16B", "F", "CMYK", "YCbCr", "LAB", "HSV",
]  # fmt: skip
DTYPES = ["uint8", "uint16", "int8", "int32", "int64", "float16", "float32",
          "float64", "bool"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: more threads only spin on a loaded box
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(clip_path, tmp_path_factory):
    """``(plain, cached)`` transformers of the tiny CLIP; one store for every example."""
    store = tmp_path_factory.mktemp("fuzz-store")
    params = {"pooling": "mean", "device": "cpu", "batch_size": 4}
    plain = VLMEmbeddingTransformer(clip_path, **params).fit(None)
    cached = VLMEmbeddingTransformer(clip_path, cache=str(store), **params).fit(None)
    return plain, cached


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-files")


# -- strategies ---------------------------------------------------------------------------
@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(MODES))
    # Few sizes and pixel seeds, so that images often share their raw pixel
    # data (palette indices, say) and differ in what else decides the colours.
    size = draw(
        st.one_of(
            st.sampled_from([(1, 1), (8, 8), (16, 12)]),
            st.tuples(st.integers(1, 40), st.integers(1, 40)),
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 3)))
    extra = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode == "F":
        scale = draw(st.sampled_from([1.0, 255.0, 1e30]))
        data = (rng.random(size[::-1]) * scale).astype(np.float32)
        if draw(st.booleans()):
            data.flat[rng.integers(data.size)] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf, -1.0])
            )
        return Image.fromarray(data, mode="F")
    if mode == "I":
        high = draw(st.sampled_from([256, 65536, 2**31 - 1]))
        data = rng.integers(-high if draw(st.booleans()) else 0, high, size[::-1])
        return Image.fromarray(data.astype(np.int32), mode="I")
    image = Image.new(mode, size)
    image.frombytes(rng.bytes(len(image.tobytes())))
    if mode in ("P", "PA"):
        colours = draw(st.integers(1, 256))
        image.putpalette(extra.bytes(3 * colours))
        transparency = draw(st.sampled_from([None, "index", "alpha"]))
        if transparency == "index":
            image.info["transparency"] = int(extra.integers(256))
        elif transparency == "alpha":
            image.info["transparency"] = extra.bytes(int(extra.integers(1, 257)))
    return image


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    h, w = draw(
        st.one_of(
            st.sampled_from([(1, 1), (8, 8)]),
            st.tuples(st.integers(1, 24), st.integers(1, 24)),
        )
    )
    shape = draw(
        st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4), (h, w, 2), (h,)])
    )
    rng = np.random.default_rng(draw(st.integers(0, 3)))  # shared data, as above
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "f":
        scale = draw(st.sampled_from([1.0, 1.0, 255.0]))
        data = (rng.random(shape) * scale).astype(dtype)
        if draw(st.integers(0, 4)) == 0:
            data.flat[0] = np.nan
        return data
    info = np.iinfo(dtype)
    high = draw(st.sampled_from([min(256, int(info.max)), int(info.max)]))
    low = max(int(info.min), -high if draw(st.booleans()) else 0)
    return rng.integers(low, high, shape, dtype=dtype, endpoint=False)


@st.composite
def encoded(draw):
    """The bytes of an image file: good, truncated, with a byte flipped, or junk."""
    image = draw(pil_images())
    fmt = draw(st.sampled_from(["PNG", "BMP", "GIF", "TIFF", "JPEG", "WEBP"]))
    if image.mode in ("I;16B", "La", "RGBa", "RGBX", "LAB", "HSV", "PA", "YCbCr"):
        image = image.convert("LA" if image.mode == "La" else "RGB")
    target = {"JPEG": ("L", "RGB", "CMYK"), "BMP": ("1", "L", "P", "RGB")}.get(fmt)
    if target and image.mode not in target:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError):  # a mode the format cannot store: plain RGB
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image.convert("RGB"))).save(buffer, format=fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "junk"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    elif damage == "junk":
        data = draw(st.binary(max_size=64))
    return data


def _as_path(data, files):
    import hashlib

    path = files / f"{hashlib.sha1(data).hexdigest()}.img"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


@st.composite
def items(draw, files):
    kind = draw(st.sampled_from(["pil", "array", "bytes", "path", "row"]))
    if kind == "pil":
        return draw(pil_images())
    if kind == "array":
        return draw(arrays())
    data = draw(encoded())
    if kind == "bytes":
        return data
    if kind == "path":
        return _as_path(data, files)
    return (
        {"bytes": None, "path": _as_path(data, files)}
        if draw(st.booleans())
        else {"bytes": data, "path": None}
    )


# Modes whose pixels take the same bytes: one buffer read as another image.
SAME_BYTES = [("RGBA", "RGBX", "RGBa", "CMYK"), ("LA", "PA", "La"), ("L", "P"),
              ("I;16", "I;16B"), ("RGB", "YCbCr", "LAB", "HSV")]  # fmt: skip


def _twin(image, rng):
    """Another image with ``image``'s raw pixel data: new palette, transparency or mode."""
    twin = image.copy()
    if image.mode in ("P", "PA") and rng.random() < 0.5:
        twin.putpalette(rng.bytes(768))
        if rng.random() < 0.5:
            twin.info["transparency"] = int(rng.integers(256))
        return twin
    for group in SAME_BYTES:
        if image.mode in group:
            mode = group[int(rng.integers(len(group)))]
            twin = Image.frombytes(mode, image.size, image.tobytes())
            if mode in ("P", "PA"):
                twin.putpalette(rng.bytes(768))
            return twin
    return twin


def _container(X, kind):
    if kind == "list":
        return X
    if kind == "object array":
        out = np.empty(len(X), dtype=object)
        for i, item in enumerate(X):
            out[i] = item
        return out
    if kind == "series":
        return pd.Series(X, dtype=object)
    return pd.DataFrame({"image": pd.Series(X, dtype=object), "label": range(len(X))})


# -- the property -------------------------------------------------------------------------
def _run(vlm, X):
    """``(rows, NaN row indices named by the warning)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = vlm.transform(X)
    named = []
    for w in caught:
        text = str(w.message)
        if "could not be read and got NaN rows" in text:
            named = [int(i) for i in text.split("[")[1].split("]")[0].split(",") if i]
    return out, named


def _check(models, X):
    plain, cached = models
    plain.set_params(on_error="nan")
    cached.set_params(on_error="nan")
    want, want_named = _run(plain, X)
    got, got_named = _run(cached, X)
    bad = [i for i in range(len(want)) if np.isnan(want[i]).all()]
    assert not np.isnan(np.delete(want, bad, axis=0)).any()
    # The warning names every bad row (in the order they were found).
    assert sorted(got_named) == sorted(want_named) == bad, (got_named, want_named)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, equal_nan=True)
    # Under on_error="raise", an error names one of the bad rows.
    for vlm in (plain, cached):
        vlm.set_params(on_error="raise")
        if bad:
            with pytest.raises(ImageLoadError) as info:
                vlm.transform(X)
            assert info.value.index in bad, (info.value, bad)
            assert f"X[{info.value.index}]" in str(info.value)
        else:
            np.testing.assert_allclose(vlm.transform(X), want, atol=1e-5, rtol=1e-5)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_a_cached_transform_is_an_uncached_one_row_for_row(models, files, data):
    X = data.draw(st.lists(items(files), min_size=1, max_size=6), label="X")
    # Twins: images that share another one's raw pixel data but not its colours.
    seed = data.draw(st.integers(0, 2**32 - 1), label="twin seed")
    for i in data.draw(st.lists(st.integers(0, len(X) - 1), max_size=3), label="twins"):
        if isinstance(X[i], Image.Image):
            X.append(_twin(X[i], np.random.default_rng(seed + i)))
    container = data.draw(
        st.sampled_from(["list", "object array", "series", "frame"]), label="container"
    )
    _check(models, _container(X, container))


@pytest.fixture(scope="module")
def dataset_module():
    return pytest.importorskip("datasets")


@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_datasets_rows_follow_the_same_rule(models, files, dataset_module, data):
    encoded_items = data.draw(st.lists(encoded(), min_size=1, max_size=4), label="X")
    rows = [{"bytes": b, "path": None} for b in encoded_items]
    features = dataset_module.Features({"image": dataset_module.Image()})
    X = dataset_module.Dataset.from_dict({"image": rows}, features=features)
    _check(models, X)


# -- files that change between calls ------------------------------------------------------
OPS = ["rewrite", "same size in place", "truncate", "replace", "copy another", "touch"]


def _mutate(path, op, other, rng):
    """Change ``path``; restore its atime and mtime after (what cp -p would leave)."""
    before = os.stat(path)
    old = path.read_bytes()
    if op == "rewrite":
        path.write_bytes(_png(rng))
    elif op == "same size in place":
        fresh = _bmp(rng)  # BMPs of one size have one length
        with open(path, "r+b") as file:
            file.write(fresh[: len(old)].ljust(len(old), b"\0"))
    elif op == "truncate":
        with open(path, "r+b") as file:
            file.truncate(int(rng.integers(0, max(1, len(old)))))
    elif op == "replace":
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_bmp(rng))
        os.replace(tmp, path)
    elif op == "copy another":
        path.write_bytes(other.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _bmp(rng):
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="BMP")
    return buffer.getvalue()


def _png(rng):
    buffer = io.BytesIO()
    size = tuple(int(s) for s in rng.integers(4, 33, 2))
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", params=["as shipped", "every file settled"])
def file_rule(request, tmp_path_factory):
    """The racy-clean rule as shipped, or with every file counted as settled.

    "Settled" memoises every digest, even of a file written a moment ago, so
    only the ctime tells a rewrite with restored times from the original;
    it needs a filesystem whose ctime ticks finer than the gaps between writes.
    """
    if request.param == "as shipped":
        yield
        return
    probe = tmp_path_factory.mktemp("tick") / "probe"
    ticks = set()
    for _ in range(3):
        probe.write_bytes(b"x")
        ticks.add(os.stat(probe).st_ctime_ns % 10**9)
    if ticks == {0}:
        pytest.skip("this file system keeps whole-second ctimes")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_filestate, "RACY_NS", -(10**12))
        yield


@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_files_changed_between_calls_are_never_served_stale(
    models, tmp_path_factory, file_rule, data
):
    folder = tmp_path_factory.mktemp("mutated")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    paths = [folder / f"{i}.img" for i in range(3)]
    for path in paths:
        path.write_bytes(_bmp(rng))
    X = [
        str(paths[i])
        for i in data.draw(st.lists(st.integers(0, 2), min_size=1, max_size=5))
    ]
    _check(models, X)
    steps = data.draw(
        st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2), st.integers(0, 2)),
                 min_size=1, max_size=4),
        label="steps",
    )  # fmt: skip
    for op, target, other in steps:
        _wait_for_a_later_tick(paths[target])
        _mutate(paths[target], op, paths[other], rng)
        _check(models, X)


def _wait_for_a_later_tick(path, gap_ns=20_000_000):
    """Sleep until the clock is ``gap_ns`` past the file's ctime (a fresh tick)."""
    import time

    while time.time_ns() - os.stat(path).st_ctime_ns < gap_ns:
        time.sleep(0.005)
