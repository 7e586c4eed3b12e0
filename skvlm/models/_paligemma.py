"""Adapter for PaliGemma (1 and 2): SigLIP tower, linear projector, Gemma LM with a prefix."""

from __future__ import annotations

from ._chat import DEFAULT_PROMPT
from ._llava import LlavaAdapter
from ._traits import resolve_path


class PaliGemmaAdapter(LlavaAdapter):
    """PaliGemma (``PaliGemmaForConditionalGeneration``).

    The image tokens and the prompt form a prefix that attends to itself in both
    directions (``token_type_ids`` 0); skvlm passes ``token_type_ids`` so that the
    language stage sees the same attention pattern as the model was trained with.

    Stages and layers:

    - ``vision``: the SigLIP tower. It has no CLS token: ``mean``/``max`` run over
      all patch tokens. Entry 0 = the patch embeddings (with position
      embeddings), entry k = after block k, no post-layernorm on any entry (the
      tower's own ``output_hidden_states``). ``pooler`` (SigLIP's attention-pooling
      head) at the last entry, only for towers that keep the head (PaliGemma's
      checkpoints drop it).
    - ``projector``: one entry, the image tokens after the linear projector (from
      the tower's post-layernormed last layer); ``mean`` and ``max``.
    - ``language``: entry 0 = the input embeddings as the first Gemma block receives
      them (text embeddings already scaled by sqrt(hidden size), as HF's
      ``hidden_states[0]``; image tokens merged in), entry k = after block k, the
      last entry after the final norm. Poolings as every generative family:
      ``last``, ``mean``, ``max``, ``image_mean``, ``text_mean`` and positions.

    PaliGemma has no chat template: the prompt becomes ``"<image>" + prompt``,
    and the processor expands the image token, adds ``<bos>`` after it and a
    newline at the end (the format the checkpoints were trained on).
    """

    family = "paligemma"
    model_types = ("paligemma",)
    raster_stages = ()

    def _tower_has_pooler(self):
        return resolve_path(self.tower, self.traits.vision_head) is not None

    def format_prompt(self, prompt):
        """``"<image>" + prompt``; a prompt that has ``<image>`` is used as is.

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_paligemma
        >>> adapter = load_adapter(make_tiny_paligemma(tempfile.mkdtemp()), device="cpu")
        >>> adapter.format_prompt("caption en")
        '<image>caption en'
        """
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        return prompt if self.image_token in prompt else self.image_token + prompt

    def image_tokens(self, batch):
        return list(self.base.get_image_features(batch["pixel_values"]).pooler_output)
