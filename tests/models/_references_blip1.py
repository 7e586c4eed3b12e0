"""BLIP (v1) and InstructBLIP-Video references: HF's own outputs, one example
at a time.

BLIP's text decoder is read over the prompt as HF's own ``generate`` feeds
it (the processor's ``[CLS] prompt [SEP]``, its first token replaced by the
decoder's BOS and its last dropped: HF's code, written out here), the image
given by the tower's last states (cross-attention), states from the text
decoder's own ``output_hidden_states``. InstructBLIP-Video reads each image as
a still video of 4 identical frames (the frames its processor writes
positions for): states from the model's own ``output_hidden_states`` and
``get_video_features``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Example, Tokens, _np

__all__ = ["blip_reference", "instructblipvideo_reference"]


def _vision_tokens(states):
    """A ViT tower's states: a CLS first, left out of ``mean``/``max``."""
    states = [_np(h[0]) for h in states]
    return Tokens(states, pooled=np.arange(len(states[0])) > 0)


def blip_reference(path, images, prompts):
    hf = HF(path)
    model, processor = hf.model, hf.processor
    text_config = model.config.text_config
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        ids = inputs["input_ids"].clone()
        ids[:, 0] = text_config.bos_token_id  # as BlipForConditionalGeneration.generate
        ids = ids[:, :-1]
        with torch.no_grad():
            vision = model.vision_model(
                pixel_values=inputs["pixel_values"], output_hidden_states=True
            )
            states = model.text_decoder(
                input_ids=ids,
                encoder_hidden_states=vision.last_hidden_state,
                output_hidden_states=True,
            ).hidden_states
        row = ids[0].numpy()
        specials = hf.specials | {text_config.bos_token_id}
        examples.append(
            Example(
                {
                    "vision": _vision_tokens(vision.hidden_states),
                    "language": Tokens(
                        [_np(h[0]) for h in states],
                        text=~np.isin(row, sorted(specials)),
                    ),
                }
            )
        )
    return examples


#: Frames of the still video each image becomes.
FRAMES = 4


def instructblipvideo_reference(path, images, prompts):
    hf = HF(path)
    model, processor = hf.model, hf.processor
    video_token = model.config.video_token_id
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(
            images=[[image] * FRAMES], text=[prompt], return_tensors="pt"
        )
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            features = model.get_video_features(
                pixel_values=inputs["pixel_values"],
                qformer_input_ids=inputs["qformer_input_ids"],
                qformer_attention_mask=inputs["qformer_attention_mask"],
            ).pooler_output
        # the tower ran the 4 frames as 4 rows: the first is the image's
        vision = [h[:1] for h in out.vision_outputs.hidden_states]
        assert all(torch.allclose(h[0], h[3]) for h in out.vision_outputs.hidden_states)
        row = inputs["input_ids"][0].numpy()
        image = row == video_token
        text = ~image & ~np.isin(row, sorted(hf.specials - {video_token}))
        states = out.language_model_outputs.hidden_states
        assert features.shape[1] == FRAMES * model.config.num_query_tokens
        assert int(image.sum()) == features.shape[1]
        examples.append(
            Example(
                {
                    "vision": _vision_tokens(vision),
                    "projector": Tokens([_np(features[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in states], image=image, text=text
                    ),
                }
            )
        )
    return examples
