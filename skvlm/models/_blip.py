"""Adapters for BLIP-2 and InstructBLIP: ViT tower, Q-Former, OPT / LLaMA / T5 LM."""

from __future__ import annotations

from ._base import LANGUAGE_POOLINGS, Stack, language_masks
from ._chat import DEFAULT_PROMPT
from ._llava import LlavaAdapter
from ._traits import (
    family_traits,
    final_norm,
    has_class_token,
    language_layers,
    resolve_path,
)
from ._vision import _to_device


class Blip2Adapter(LlavaAdapter):
    """BLIP-2 (``Blip2ForConditionalGeneration``).

    Stages and layers:

    - ``vision``: the ViT tower (EVA-CLIP). Entry 0 = the embeddings (CLS + patch
      tokens with position embeddings), entry k = after block k, no
      post-layernorm on any entry (the tower's own ``output_hidden_states``).
      Poolings ``cls``, ``mean``/``max`` (patch tokens), ``pooler``
      (post-layernormed CLS) at the last entry.
    - ``projector``: one entry, the Q-Former's query outputs after
      ``language_projection``: the ``num_query_tokens`` (32) soft tokens the
      language model sees, in its width. ``mean`` and ``max``.
    - ``language``, decoder-only LM (OPT, LLaMA-style): entry 0 = the input
      embeddings with the query tokens merged in (OPT: after its learned position
      embeddings are added, as HF's ``hidden_states[0]``), entry k = after
      decoder block k, the last entry after the final layer norm. Encoder-decoder
      LM (Flan-T5): the stack is the T5 *encoder* over the query tokens and the
      prompt (entry 0 = input embeddings, the last entry after the encoder's
      final layer norm); the decoder never runs. Poolings ``last``, ``mean``,
      ``max``, ``image_mean`` (the query tokens), ``text_mean`` and positions.

    Prompt format: ``"Question: {prompt} Answer:"`` (BLIP-2's VQA format). The
    processor always puts the query tokens first, before BOS; a prompt that
    starts with ``<image>`` is used as is after dropping that placeholder.

    With a Flan-T5 language model (``encoder_decoder`` is then True),
    generative scoring reads a class name as a continuation of the T5
    *decoder* (after its start token and the answer prefix), given the
    encoder's states over the query tokens and the prompt, and the tuner
    trains on the same reading; LoRA adapts the linear layers of both the
    encoder's and the decoder's blocks.
    """

    family = "blip-2"
    model_types = ("blip-2",)
    raster_stages = ()
    prompt_format = "Question: {prompt} Answer:"
    prompted_projector = False  # whether the Q-Former reads the prompt
    token_id_name = "image_token_id"  # the config's id of the query positions

    def __init__(self, model, processor):
        # LlavaAdapter.__init__ reads LLaVA's module names; BLIP's differ.
        self.model = model
        self.processor = processor
        self.base = model
        traits = family_traits(model)
        self.tower = resolve_path(model, traits.vision)
        self.vision_blocks = resolve_path(self.tower, traits.vision_blocks)
        self.has_cls = has_class_token(self.tower)
        self.image_token_id = getattr(model.config, self.token_id_name)
        self.encoder_decoder = not model.config.use_decoder_only_language_model
        self.language_blocks, self.language_norm, self.language_problem = (
            _language_parts(model)
        )
        if getattr(processor, "num_query_tokens", 1) is None:
            # older checkpoints' processors leave the query tokens out of the text
            processor.num_query_tokens = model.config.num_query_tokens

    def n_layers(self, stage):
        if stage == "language":
            return len(self.language_blocks) + 1
        return super().n_layers(stage)

    def poolings(self, stage, layer):
        return (
            LANGUAGE_POOLINGS if stage == "language" else super().poolings(stage, layer)
        )

    def format_prompt(self, prompt):
        """BLIP-2's ``"Question: {prompt} Answer:"``.

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_blip2
        >>> adapter = load_adapter(make_tiny_blip2(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("What is it?")
        'Question: What is it? Answer:'
        >>> adapter.format_prompt("<image>a photo of")
        'a photo of'
        """
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        if self.image_token not in prompt:
            return self.prompt_format.format(prompt=prompt)
        if (
            not prompt.startswith(self.image_token)
            or prompt.count(self.image_token) > 1
        ):
            raise ValueError(
                f"prompt {prompt!r} puts {self.image_token!r} after some text; "
                f"{self.family} always places its query tokens before the text, so "
                f"the placeholder may only open the prompt. Remove it or move it to "
                "the start."
            )
        return prompt[len(self.image_token) :]

    def prepare(self, images, prompts=None):
        if prompts is None and not self.prompted_projector:
            batch = self.processor.image_processor(images=images, return_tensors="pt")
            return _to_device(dict(batch), self.device, self.dtype)
        prompts = [None] * len(images) if prompts is None else prompts
        texts = [self.format_prompt(p) for p in prompts]
        batch = self.processor(
            images=images, text=texts, return_tensors="pt", padding=True
        )
        return _to_device(dict(batch), self.device, self.dtype)

    def stack(self, stage, batch):
        if stage == "vision":
            return super().stack(stage, batch)
        if self.language_problem:
            raise ValueError(self.language_problem)
        masks = language_masks(
            batch["input_ids"],
            batch["attention_mask"],
            {self.image_token_id},
            self.special_ids(),
        )
        return Stack(
            blocks=self.language_blocks, masks=masks, final_norm=self.language_norm
        )

    def forward(self, stage, batch):
        if stage == "vision":
            return self.tower(pixel_values=batch["pixel_values"])
        # The hooks stop the pass at the deepest requested entry, at the latest
        # the final norm: the LM head (and a T5 decoder) never runs.
        return self.model(**batch, use_cache=False)

    def image_tokens(self, batch):
        return list(
            self.model.get_image_features(**self._qformer_inputs(batch)).pooler_output
        )

    def _qformer_inputs(self, batch):
        return {"pixel_values": batch["pixel_values"]}


class InstructBlipAdapter(Blip2Adapter):
    """InstructBLIP (``InstructBlipForConditionalGeneration``).

    As BLIP-2, except that the Q-Former also reads the instruction
    (``qformer_input_ids``), so the ``projector`` stage depends on the prompt: it
    uses the prompts ``prepare`` receives, and the default prompt when it
    receives none (``prompt_stages`` lists the stages that read the prompt). Stages,
    layers and poolings are BLIP-2's; the LM is usually Vicuna (LLaMA-style; last
    language entry after the final norm) or Flan-T5 (its encoder, see BLIP-2).
    The prompt is the instruction itself, with no template.
    """

    family = "instructblip"
    model_types = ("instructblip",)
    prompt_format = "{prompt}"
    prompted_projector = True
    #: stages whose features depend on the prompt
    prompt_stages = ("projector", "language")

    def _qformer_inputs(self, batch):
        keys = ("pixel_values", "qformer_input_ids", "qformer_attention_mask")
        return {k: batch[k] for k in keys}


def _language_parts(model):
    """(blocks, final norm, problem) of a BLIP model's language stack."""
    traits = family_traits(model)
    lm = resolve_path(model, traits.language)
    # the T5 encoder; OPT's decoder (OPTModel keeps its blocks in .decoder), LLaMA's model
    if model.config.use_decoder_only_language_model:
        stack = lm.get_decoder()
    else:
        stack = lm.get_encoder()
    blocks = language_layers(stack, traits)
    norm = final_norm(stack, traits.language_norm)
    if not model.config.use_decoder_only_language_model:
        return blocks, norm, None
    text = model.config.get_text_config()
    problem = None
    # OPT projects its last hidden state to word_embed_proj_dim (project_out)
    if getattr(text, "word_embed_proj_dim", text.hidden_size) != text.hidden_size:
        problem = (
            f"The language model ({type(lm).__name__}) projects its last hidden state "
            "to another width (project_out), so its layers do not share one width; "
            "skvlm supports the language stage only for LMs without project_out "
            "(every released BLIP-2/InstructBLIP checkpoint). Use stage='vision' or "
            "'projector'."
        )
    return blocks, norm, problem
