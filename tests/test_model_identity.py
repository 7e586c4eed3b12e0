"""A model is identified by every byte of its files: a store never serves stale weights.

A fine-tune that saves over a model directory may rewrite a few tensors in place
(same file, same size). These tests rewrite one tensor's bytes inside the
safetensors file, even restoring the file's modification time, and check that
both the registry and the store notice.
"""

import json
import os
import struct

import numpy as np
import pytest

from skvlm import VLMEmbeddingTransformer, clear_model_cache
from skvlm.models import directory_digest, load_adapter
from skvlm.testing import random_images


def _rewrite_tensor_in_place(path, name):
    """Negate one tensor's bytes in a safetensors file; keep size, inode and mtime."""
    file = path / "model.safetensors"
    before = os.stat(file)
    with open(file, "r+b") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        start, end = header[name]["data_offsets"]
        assert header[name]["dtype"] == "F32"
        f.seek(8 + header_len + start)
        values = np.frombuffer(f.read(end - start), dtype="<f4")
        f.seek(8 + header_len + start)
        f.write((-values + 0.5).astype("<f4").tobytes())
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(file)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (
        before.st_size,
        before.st_ino,
        before.st_mtime_ns,
    )


def _a_language_block_tensor(path):
    with open(path / "model.safetensors", "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        names = json.loads(f.read(header_len))
    return next(n for n in names if "language_model" in n and "layers.1." in n)


@pytest.fixture
def llava_dir(tmp_path, llava_path):
    """A copy of the session's tiny LLaVA: these tests rewrite its files."""
    import shutil

    return shutil.copytree(llava_path, tmp_path / "llava")


def test_store_and_registry_follow_a_tensor_rewritten_in_place(llava_dir, tmp_path):
    images = random_images(4, seed=11)
    params = dict(stage="language", layer=-1, pooling="mean")
    store = str(tmp_path / "store")
    before = VLMEmbeddingTransformer(llava_dir, cache=store, **params).fit_transform(
        images
    )
    _rewrite_tensor_in_place(llava_dir, _a_language_block_tensor(llava_dir))

    cached = VLMEmbeddingTransformer(llava_dir, cache=store, **params).fit_transform(
        images
    )
    uncached = VLMEmbeddingTransformer(llava_dir, **params).fit_transform(images)
    clear_model_cache()
    fresh = VLMEmbeddingTransformer(llava_dir, **params).fit_transform(images)

    assert np.abs(fresh - before).max() > 1e-2  # the rewrite changed the model
    np.testing.assert_array_equal(uncached, fresh)  # the registry reloaded it
    np.testing.assert_allclose(cached, fresh, rtol=1e-6, atol=1e-6)  # no stale hit


def test_directory_digest_covers_every_byte(llava_dir):
    digest = directory_digest(llava_dir)
    _rewrite_tensor_in_place(llava_dir, _a_language_block_tensor(llava_dir))
    assert directory_digest(llava_dir) != digest


def test_identity_refuses_files_changed_after_loading(llava_dir):
    adapter = load_adapter(llava_dir, device="cpu")
    adapter.identity()
    _rewrite_tensor_in_place(llava_dir, _a_language_block_tensor(llava_dir))
    with pytest.raises(RuntimeError, match="changed since the model was loaded"):
        adapter.identity()
    assert load_adapter(llava_dir, device="cpu") is not adapter  # reloaded
