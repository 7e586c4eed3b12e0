"""GIT's and Fuyu's references: HF's own ``hidden_states``, one example at a time.

Both put the image in front of the prompt themselves. GIT's decoder puts the
projected image tokens before the text's embeddings (none of them in
``input_ids``): its hidden states are longer than the ids by the image's
tokens, the first ones. Fuyu's processor writes one ``|SPEAKER|`` id per patch
(the model's ``image_token_id``), rows closed by ``|NEWLINE|``, then ``<s>``,
the prompt and ``<0x04>``.
"""

from __future__ import annotations

import numpy as np
import torch

from ._references import HF, Example, Tokens, _np

__all__ = ["fuyu_reference", "git_reference"]


def git_reference(path, images, prompts):
    """Vision: the tower's ``hidden_states`` (a CLS first, left out of
    ``mean``/``max``); language: the model's ``hidden_states`` over ``[CLS]``
    (its ``bos_token_id``) and the prompt's ids without special tokens, as
    GIT's visual question answering example feeds it; projector: the image's
    vectors at entry 0 (the visual projection's output, which the model puts
    there as is)."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    tokenizer = processor.tokenizer
    n_blocks = model.config.vision_config.num_hidden_layers
    pixels = [
        processor(images=[im], return_tensors="pt")["pixel_values"] for im in images
    ]
    # every tower pass first: in transformers 5.25, once the whole model has
    # run with output_hidden_states=True, the tower's own hidden_states give
    # each block's output twice
    with torch.no_grad():
        towers = [
            model.git.image_encoder(pixel_values=p, output_hidden_states=True)
            for p in pixels
        ]
    examples = []
    for tower, pixel, prompt in zip(towers, pixels, prompts, strict=True):
        vision = tower.hidden_states
        assert len(vision) == n_blocks + 1
        words = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[model.config.bos_token_id, *words]])
        with torch.no_grad():
            language = model(
                input_ids=ids, pixel_values=pixel, output_hidden_states=True
            ).hidden_states
        assert len(language) == model.config.num_hidden_layers + 1
        n_image = language[0].shape[1] - ids.shape[1]
        assert n_image == vision[0].shape[1]  # class token and patches
        image_mask = np.arange(language[0].shape[1]) < n_image
        special = np.isin(ids[0].numpy(), sorted(tokenizer.all_special_ids))
        text_mask = np.concatenate([np.zeros(n_image, bool), ~special])
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        [_np(h[0]) for h in vision],
                        pooled=np.arange(vision[0].shape[1]) >= 1,
                    ),
                    "projector": Tokens([_np(language[0][0, :n_image])]),
                    "language": Tokens(
                        [_np(h[0]) for h in language], image=image_mask, text=text_mask
                    ),
                }
            )
        )
    return examples


def fuyu_reference(path, images, prompts):
    """Projector: the patch embeddings HF writes at the image's ``|SPEAKER|``
    positions (entry 0 there; checked equal to ``get_image_features``);
    language: the model's ``hidden_states``, the prompt's words being the
    tokens between ``<s>`` and the final ``<0x04>``."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    tokenizer = processor.tokenizer
    bos, boa = tokenizer.convert_tokens_to_ids(["<s>", "<0x04>"])
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(
            images=[image],
            text=[prompt],
            return_tensors="pt",
            return_legacy_image_output=False,
        )
        with torch.no_grad():
            language = model(**inputs, output_hidden_states=True).hidden_states
            patches = model.model.get_image_features(inputs["pixel_values"])
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == model.config.image_token_id
        torch.testing.assert_close(
            language[0][0][image_mask], patches.last_hidden_state, rtol=0, atol=0
        )
        assert ids[-1] == boa
        start = np.flatnonzero(ids == bos)[-1] + 1
        text_mask = np.zeros(len(ids), bool)
        text_mask[start:-1] = True
        examples.append(
            Example(
                {
                    "projector": Tokens([_np(language[0][0][image_mask])]),
                    "language": Tokens(
                        [_np(h[0]) for h in language], image=image_mask, text=text_mask
                    ),
                }
            )
        )
    return examples
