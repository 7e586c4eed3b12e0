"""GIT (``GitForCausalLM``): a CLIP-like tower, a visual projection, and a
BERT-like decoder over the image's tokens followed by the text.

GIT's prompts hold no image token: the model itself puts the projected image
tokens (the tower's class token and patches) in front of the text's
embeddings, so its hidden states are longer than ``input_ids`` by the image's
tokens. skvlm reads their number off the hidden states (their length minus
the text's), not off a placeholder.

Stages and layers:

- ``vision``: the tower's blocks (entry 0 = the patch and class embeddings
  after the tower's pre-norm, k = after block k: the tower's own
  ``hidden_states``). ``cls`` is the class token; ``mean`` and ``max`` pool
  the patches.
- ``projector``: the visual projection of the tower's output (after its
  post-norm), one image's class token and patches: the vectors the decoder
  reads at its image positions.
- ``language``: the decoder's blocks: entry 0 = the image tokens, then the
  text's word and position embeddings after their layer norm (the input of the
  first block), k = after block k (HF's ``hidden_states``; GIT's blocks are
  post-norm, so there is no final norm). ``image_mean`` covers the image's
  tokens; ``text_mean`` the prompt's words (``[CLS]`` and the other special
  tokens left out); ``last`` is the prompt's last token.

Prompt format: ``[CLS]`` (the model's ``bos_token_id``), then the prompt's
tokens, with no ``[SEP]`` after them: the text GIT's ``generate`` starts from
and its visual question answering continues. A prompt that opens with
``<image>`` is used without it. Text positions count the text alone, from 0,
in padded batches too (``position_ids`` from the attention mask, as HF's
``generate`` passes them).
"""

from __future__ import annotations

import torch

from ..pooling import TokenMasks
from ._base import Stack
from ._chat import image_first_prompt, text_ids
from ._generic import GenericImageTextAdapter
from ._tokens import valid_position_ids
from ._traits import resolve_path
from ._vision import _to_device


class GitAdapter(GenericImageTextAdapter):
    """GIT (``GitForCausalLM``): see the module's notes."""

    family = "git"
    model_types = ("git",)
    stages = ("vision", "projector", "language")
    fallback = False
    placeholder_in_prompt = False  # the processor puts the image first
    #: The model's cache holds the image's tokens, which ``input_ids`` do not:
    #: the generative scorer positions continuations by the text's length (as
    #: HF's ``generate`` does), not by the cache's.
    text_positions = True

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.family = "git"
        traits = self.traits
        self.projection = resolve_path(model, traits.projector[0])
        self.image_token = "<image>"  # only ever dropped from a prompt's start
        # its projector is no get_image_features: the visual projection
        self.unavailable = dict(traits.unsupported)
        self.stages = type(self).stages

    # -- inputs ----------------------------------------------------------------
    def format_prompt(self, prompt):
        """The prompt's text (GIT puts the image before it itself).

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_git
        >>> adapter = load_adapter(make_tiny_git(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("<image>What is it?")
        'What is it?'
        """
        return image_first_prompt(prompt, self.image_token, "GIT")

    def prepare(self, images, prompts=None):
        prompts = [None] * len(images) if prompts is None else prompts
        tokenizer = self.processor.tokenizer
        bos = self.model.config.bos_token_id
        ids = [
            [bos, *text_ids(tokenizer, text)] for text in self.format_prompts(prompts)
        ]
        text = tokenizer.pad(
            {"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt"
        )
        pixels = self.processor.image_processor(
            images=list(images), return_tensors="pt"
        )
        batch = {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "position_ids": valid_position_ids(text["attention_mask"]),
            "pixel_values": pixels["pixel_values"],
        }
        return _to_device(batch, self.device, self.dtype)

    def image_positions(self, batch):
        """(rows, tokens) bool over ``input_ids``: none (the image is not there)."""
        return torch.zeros_like(batch["input_ids"], dtype=torch.bool)

    # -- stacks ------------------------------------------------------------------
    def stack(self, stage, batch):
        if stage != "language":
            return super().stack(stage, batch)
        ids = batch["input_ids"]
        mask = batch["attention_mask"].bool()
        special = torch.isin(
            ids, torch.tensor(sorted(self._special_ids), device=ids.device)
        )

        def masks(hidden):
            # the model's own count of image tokens: what it put before the text
            n_image = hidden.shape[1] - ids.shape[1]
            first = torch.ones(
                ids.shape[0], n_image, dtype=torch.bool, device=ids.device
            )
            valid = torch.cat([first, mask], dim=1)
            image = torch.cat([first, torch.zeros_like(mask)], dim=1)
            text = torch.cat([~first, mask & ~special], dim=1)
            return TokenMasks(
                valid=valid, pooled=valid, image=image, text=text, has_cls=False
            )

        return Stack(blocks=self.language_blocks, masks=masks)

    def image_tokens(self, batch):
        """Each image's projector tokens: a list of (tokens, dim)."""
        hidden = self.tower(pixel_values=batch["pixel_values"]).last_hidden_state
        return list(self.projection(hidden))


ADAPTERS = [GitAdapter]

__all__ = ["GitAdapter"]
