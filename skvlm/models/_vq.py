"""Image codes computed one image at a time, for families whose processor pads.

Emu3's processor pads the images of a batch to one size (bottom and right,
recording each image's own size in ``image_sizes``), and its VQ-VAE's
convolutions see that padding: an image's discrete codes near its lower and
right edges, so its features, would depend on the other images of its batch.
For a family whose traits say ``unpad_images=True`` skvlm cuts each image back
to its own size, runs ``get_image_features`` on it alone, and hands the model
those features through its ``mm_encoder_outputs`` argument (transformers'
public way to pass precomputed image features) instead of the padded pixels.
Every stage, the generative classifier included, then reads exactly what the
model gives for the image alone, whatever batch it comes in.
"""

from __future__ import annotations

import torch

__all__ = ["unpadded_image_features"]

#: The processor outputs the features replace.
_PIXEL_INPUTS = ("pixel_values", "image_sizes")


def unpadded_image_features(base, batch):
    """``batch`` with its padded pixels replaced by each image's own features.

    Parameters
    ----------
    base : torch.nn.Module
        The model with ``get_image_features(pixel_values, image_sizes)``.
    batch : dict
        The processor's output: ``pixel_values`` (images, channels, height,
        width), padded bottom and right, and ``image_sizes`` (images, 2).

    Returns
    -------
    batch : dict
        Without ``pixel_values`` and ``image_sizes``; with
        ``mm_encoder_outputs={"image": output}``, ``output.pooler_output``
        holding one (tokens, dim) tensor per image.

    Examples
    --------
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from skvlm.models._vq import unpadded_image_features
    >>> def features(pixel_values, image_sizes):
    ...     return SimpleNamespace(pooler_output=(pixel_values.flatten(1),))
    >>> base = SimpleNamespace(get_image_features=features)
    >>> batch = {"input_ids": torch.zeros(2, 3), "pixel_values": torch.ones(2, 1, 2, 3),
    ...          "image_sizes": torch.tensor([[2, 3], [1, 2]])}
    >>> out = unpadded_image_features(base, batch)
    >>> [tuple(f.shape) for f in out["mm_encoder_outputs"]["image"].pooler_output]
    [(1, 6), (1, 2)]
    """
    pixels, sizes = batch["pixel_values"], batch["image_sizes"]
    features = []
    with torch.no_grad():  # discrete codes: no gradient reaches the pixels
        for image, (height, width) in zip(pixels, sizes.tolist(), strict=True):
            output = base.get_image_features(
                pixel_values=image[None, :, :height, :width],
                image_sizes=sizes.new_tensor([[height, width]]),
            )
            features.extend(output.pooler_output)
    output.pooler_output = tuple(features)
    out = {k: v for k, v in batch.items() if k not in _PIXEL_INPUTS}
    out["mm_encoder_outputs"] = {"image": output}
    return out
