"""ShieldGemma 2: Gemma 3 inside an image-safety classifier, served as Gemma 3.

A ShieldGemma 2 checkpoint is a ``ShieldGemma2ForImageClassification``: a
Gemma 3 model (SigLIP tower, projector, Gemma 3 language model) whose answer's
first token, ``Yes`` or ``No``, says whether the image violates a safety
policy. Its processor, ``ShieldGemma2Processor``, ignores the prompt it is
given: it turns each image into one prompt per safety policy (its
``policy_definitions``, written into its chat template's fixed instruction),
so its rows are image-policy pairs, not images.

skvlm loads the checkpoint with ``AutoModelForImageClassification`` (its
weights sit one ``model.`` deeper than a Gemma 3 model's, and
``AutoModelForImageTextToText`` would not find them) and serves the Gemma 3
model inside (the classifier's ``base_model``) exactly as it serves Gemma 3:
every stage Gemma 3 has, the generative classifier and the tuner. The
processor is a ``Gemma3Processor`` built from the checkpoint's own image
processor, tokenizer, chat template and image sequence length, so **the
prompt is the user's**: it goes through the checkpoint's chat template as the
text of the user turn, where ShieldGemma 2's template puts a policy. Passing
one of its policies' text as the prompt gives the very prompt
``ShieldGemma2Processor`` builds for that image and policy; no policy prompt
is built otherwise. A tuned model is saved as the Gemma 3 model it tunes, with the
``Gemma3Processor``: skvlm and ``AutoModelForImageClassification`` (HF's
ShieldGemma 2 classifier) load it; ``AutoModelForImageTextToText`` does not
find ShieldGemma 2 weights in either layout (for this model type transformers
looks for them one ``model.`` deeper than a Gemma 3 model holds them).
"""

from __future__ import annotations

from ._generic import GenericImageTextAdapter
from ._loading import load_processor


class ShieldGemma2Adapter(GenericImageTextAdapter):
    """ShieldGemma 2 (``ShieldGemma2ForImageClassification``): see the module's notes.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_shieldgemma2
    >>> adapter = load_adapter(make_tiny_shieldgemma2(tempfile.mkdtemp()), device="cpu")
    >>> type(adapter.model).__name__, type(adapter.processor).__name__
    ('Gemma3ForConditionalGeneration', 'Gemma3Processor')
    >>> adapter.stages
    ('vision', 'projector', 'language')
    """

    family = "shieldgemma2"
    model_types = ("shieldgemma2",)
    stages = ("vision", "projector", "language")
    fallback = False
    auto_class = "AutoModelForImageClassification"

    @classmethod
    def supports(cls, config):
        return config.model_type in cls.model_types

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """A ``Gemma3Processor`` of the checkpoint's own parts (see the module's
        notes); a processor that is one already (a tuned model's) as it is."""
        from transformers import Gemma3Processor

        saved = load_processor(path, revision=revision, model_kwargs=model_kwargs)
        if isinstance(saved, Gemma3Processor):
            return saved
        return Gemma3Processor(
            image_processor=saved.image_processor,
            tokenizer=saved.tokenizer,
            chat_template=saved.chat_template,
            image_seq_length=saved.image_seq_length,
        )

    def __init__(self, model, processor):
        from transformers import ShieldGemma2ForImageClassification

        # the classifier's Gemma 3 model: its logits are the vocabulary's (a
        # tuned model is saved as that Gemma 3 model alone)
        classifier = isinstance(model, ShieldGemma2ForImageClassification)
        gemma3 = model.base_model if classifier else model
        super().__init__(gemma3, processor)
        self.family = "shieldgemma2"
