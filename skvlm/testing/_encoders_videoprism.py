"""Tiny random-init VideoPrism models (helper videoprism).

``videoprism`` (the video-text model, with a word-level tokenizer) and
``videoprism_vision_model``: two spatial and two temporal blocks over still
videos of two frames, with transformers' own video processor
(``LlavaOnevisionVideoProcessor``, torchvision only: built and tested in the
torchvision world), saved in Hugging Face layout for ``make_tiny_encoder``.
"""

from __future__ import annotations

from ._tokenizer import make_tokenizer
from ._vision import VISION

IMAGE_SIZE = VISION["image_size"]
_VISION = dict(
    image_size=IMAGE_SIZE,
    num_frames=2,
    tubelet_size=(1, VISION["patch_size"], VISION["patch_size"]),
    hidden_size=32,
    num_attention_heads=2,
    intermediate_size=64,
    num_spatial_layers=2,
    num_temporal_layers=2,
    num_auxiliary_layers=1,
)
# its processor pads every text to 64 tokens, the length of its positions
_TEXT = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=64,
)


def _video_processor():
    import transformers

    return transformers.LlavaOnevisionVideoProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_normalize=False,
        do_sample_frames=False,
    )


def _videoprism():
    import transformers

    config = transformers.VideoPrismConfig(vision_config=_VISION, text_config=_TEXT)
    processor = transformers.VideoPrismProcessor(
        video_processor=_video_processor(), tokenizer=make_tokenizer()
    )
    return transformers.VideoPrismClipModel(config), processor


def _videoprism_vision():
    import transformers

    config = transformers.VideoPrismVisionConfig(**_VISION)
    return transformers.VideoPrismVisionModel(config), _video_processor()


BUILDERS = {
    "videoprism": _videoprism,
    "videoprism_vision_model": _videoprism_vision,
}
