"""Emu3's image codes, computed image by image (``skvlm.models._vq``).

Its processor pads a batch's images to one size and the VQ-VAE's convolutions
see the padding; skvlm encodes each image cut back to its own size. Compared
with HF's own ``get_image_features`` on each image processed alone.
"""

import torch

from skvlm.models import load_adapter
from skvlm.testing import random_images


def test_each_image_is_encoded_as_if_alone(built):
    adapter = load_adapter(built.path("emu3"), device="cpu")
    images = random_images(3, sizes=[(32, 64), (64, 32), (40, 40)])
    batch = adapter.prepare(images, ["a"] * 3)
    assert "pixel_values" not in batch
    got = batch["mm_encoder_outputs"]["image"].pooler_output
    model, processor = adapter.base, adapter.processor.image_processor
    for image, features in zip(images, got, strict=True):
        alone = processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            (want,) = model.get_image_features(**alone).pooler_output
        torch.testing.assert_close(features, want, rtol=0, atol=0)
    # the padded batch itself gives other codes for the smaller images
    padded = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        hf = model.get_image_features(**padded).pooler_output
    assert any(not torch.equal(a, b) for a, b in zip(hf, got, strict=True))
