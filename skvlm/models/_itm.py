"""Image-text retrieval checkpoints served as CLIP-style models.

BLIP and BLIP-2 ship two kinds of checkpoints under one model type each
(``"blip"``, ``"blip-2"``): the captioner (``BlipForConditionalGeneration``,
:mod:`skvlm.models._blip1`; ``Blip2ForConditionalGeneration``,
:mod:`skvlm.models._blip`) and the retrieval model
(``BlipForImageTextRetrieval``, e.g. ``Salesforce/blip-itm-base-coco``;
``Blip2ForImageTextRetrieval``, e.g. ``Salesforce/blip2-itm-vit-g``). The
config's ``architectures`` tell them apart, so the adapters here are chosen by
architecture, before the model type.

A retrieval checkpoint offers:

- ``vision``: the ViT tower's hidden states (``cls``, ``mean``, ``max``;
  ``pooler`` at the last layer: the tower's own pooled output);
- ``projector``: the image side of its joint space, the projection of the
  tower's last class token (``pooler``), as the model's image-text contrastive
  (ITC) score takes it;
- zero-shot classification (:class:`~skvlm.classifiers.CLIPZeroShotClassifier`):
  the text tower's ``[CLS]`` projected into the same space; the logits are the
  cosine similarities, the model's own ``use_itm_head=False`` score (it has no
  temperature).

BLIP-2's retrieval model reads an image through its Q-Former's queries: its
``projector`` stage (``pooler``) is the queries' projections, each of unit
length, side by side (``n_queries * dim`` columns), and its zero-shot logit
for a class is the best query's cosine similarity with the class text, as
HF's ``use_image_text_matching_head=False`` score.
"""

from __future__ import annotations

import torch

from ._traits import RETRIEVAL_TRAITS, derive_traits, resolve_path
from ._vision import CLIPAdapter


class BlipRetrievalAdapter(CLIPAdapter):
    """BLIP's image-text retrieval model (``BlipForImageTextRetrieval``).

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_blip_retrieval
    >>> adapter = load_adapter(make_tiny_blip_retrieval(tempfile.mkdtemp()), device="cpu")
    >>> adapter.family, adapter.stages, adapter.dim("projector")
    ('blip', ('vision', 'projector'), 16)
    >>> adapter.encode_text(["a photo of a cat", "a dog"]).shape
    torch.Size([2, 16])
    """

    family = "blip"
    model_types = ()  # chosen by architecture (the captioner has the same type)
    architectures = ("BlipForImageTextRetrieval",)
    auto_class = "BlipForImageTextRetrieval"
    has_cls = True
    probability = "softmax"

    #: image vectors per image in the joint space
    image_queries = 1

    def __init__(self, model, processor):
        super().__init__(model, processor)
        traits = self.traits
        self.text_out = resolve_path(model, traits.projector[1])
        self.text_tower = resolve_path(model, traits.language)

    @property
    def traits(self):
        architecture = self.architectures[0]
        return derive_traits(self.model, RETRIEVAL_TRAITS[architecture])

    def dim(self, stage):
        if stage == "projector":
            return self.model.config.image_text_hidden_size
        return self.vision_config.hidden_size

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return super().extract(batch, stage, requests)
        outputs = self.tower(**self.vision_inputs(batch))
        # ITC projects the last states' class token (not the pooled output,
        # which BLIP's tower normalises once more)
        cls = outputs.last_hidden_state[:, 0]
        return {(0, "pooler"): self.projection(cls).float()}

    def encode_text(self, texts, batch_size=64):
        """Text embeddings in the joint space (not normalised), float32 (n, dim)."""
        tokenizer = self.processor.tokenizer
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                list(texts[start : start + batch_size]),
                return_tensors="pt",
                padding="longest",
                truncation=True,
            )
            states = self.text_states(
                tokens["input_ids"].to(self.device),
                tokens["attention_mask"].to(self.device),
            )
            states = states.to(self.text_out.weight.dtype)
            chunks.append(self.text_out(states[:, 0]).float())
        return torch.cat(chunks)

    def text_states(self, input_ids, attention_mask):
        """The text tower's last states, (texts, tokens, dim)."""
        return self.text_tower(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state

    def logit_params(self):
        """(1, 0): the model's ITC score is the plain cosine similarity."""
        return 1.0, 0.0


class Blip2RetrievalAdapter(BlipRetrievalAdapter):
    """BLIP-2's image-text retrieval model (``Blip2ForImageTextRetrieval``).

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_blip2_retrieval
    >>> adapter = load_adapter(make_tiny_blip2_retrieval(tempfile.mkdtemp()), device="cpu")
    >>> adapter.family, adapter.stages, adapter.image_queries, adapter.dim("projector")
    ('blip-2', ('vision', 'projector'), 4, 64)
    """

    family = "blip-2"
    architectures = ("Blip2ForImageTextRetrieval",)
    auto_class = "Blip2ForImageTextRetrieval"

    def __init__(self, model, processor):
        super().__init__(model, processor)
        traits = self.traits
        self.queries = resolve_path(model, traits.projector[2])
        self.text_embeddings = resolve_path(model, traits.projector[3])
        #: image vectors per image in the joint space (one per query)
        self.image_queries = self.queries.shape[1]

    def dim(self, stage):
        if stage == "projector":
            return self.image_queries * self.model.config.image_text_hidden_size
        return self.vision_config.hidden_size

    def extract(self, batch, stage, requests):
        if stage != "projector":
            return CLIPAdapter.extract(self, batch, stage, requests)
        states = self.tower(**self.vision_inputs(batch)).last_hidden_state
        queries = self.queries.expand(states.shape[0], -1, -1)
        mask = torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)
        out = self.text_tower(
            query_embeds=queries,
            encoder_hidden_states=states,
            encoder_attention_mask=mask,
        ).last_hidden_state
        out = out.to(self.projection.weight.dtype)
        embeds = torch.nn.functional.normalize(self.projection(out), dim=-1)
        return {(0, "pooler"): embeds.flatten(1).float()}

    def text_states(self, input_ids, attention_mask):
        """The Q-Former's last states over the text alone (no queries)."""
        embeds = self.text_embeddings(input_ids=input_ids)
        return self.text_tower(
            query_embeds=embeds, query_length=0, attention_mask=attention_mask
        ).last_hidden_state


ADAPTERS = [BlipRetrievalAdapter, Blip2RetrievalAdapter]
