"""The generative classifier and the tuner on every family's tiny checkpoint.

Probabilistic scores equal a naive computation written here (one full forward
pass of prompt + answer prefix + class name per class, HF's logits); the
open-ended and closed-set strategies run; the tuner takes one step with each
``train`` and changes the weights it should, never the vision tower's.
"""

import inspect
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

from skvlm.classifiers import CLIPZeroShotClassifier, VLMGenerativeClassifier
from skvlm.models import TRAITS, Traits, load_adapter
from skvlm.testing import TESTED_ENCODER_TYPES, TINY_MODELS, random_images
from skvlm.tuning import VLMClassificationTuner

from ._families import BY_NAME, NEEDS_TORCHVISION

NAMES = ["cat", "red car"]  # a one- and a two-token name
ANSWER = "The photo features a"
PROMPT = "What type of object is in this photo?"


def _refused(model_type):
    return TRAITS.get(model_type, Traits()).unsupported


#: The model types whose classifiers this file runs (the support matrix's
#: "tested" generative and tuner cells).
CLASSIFIED = sorted(
    name
    for name, tiny in TINY_MODELS.items()
    if tiny.kind == "vlm" and tiny.classifiers
)
#: Those the tuner trains (the others' traits refuse it, and say why).
TUNED = [name for name in CLASSIFIED if "tuner" not in _refused(name)]
#: Tiny checkpoints of a tested model type with another tower or language
#: model (their type's row of the support matrix is one of CLASSIFIED
#: already): LLaVA with a Pixtral tower, BLIP-2 and InstructBLIP with Flan-T5
#: (an encoder-decoder: the class names are the decoder's).
VARIANTS = ["llava_pixtral", "blip2_t5", "instructblip_t5"]
#: (the encoders' own zero-shot tests run the others: test_encoders.py)
#: The CLIP-style families of the family matrix (the encoders' own test files
#: run the zero-shot classifier of the other CLIP-style types).
ZERO_SHOT = sorted(
    name
    for name, tiny in TINY_MODELS.items()
    if tiny.kind == "clip"
    and tiny.classifiers
    and name not in TESTED_ENCODER_TYPES
    and name in BY_NAME
)


#: The same, with the torchvision-only families marked to skip outside the
#: torchvision world (test_torchvision_families.py runs them there).
def _cases(names):
    return [
        pytest.param(
            name,
            marks=(NEEDS_TORCHVISION,) if TINY_MODELS[name].torchvision else (),
        )
        for name in names
    ]


CLASSIFIED_CASES = _cases(CLASSIFIED)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)


def _path(built, model_type):
    name = {"blip-2": "blip2"}.get(model_type, model_type)
    return str(built.path(name))


@pytest.fixture(scope="module")
def images():
    return random_images(2, seed=1)


def _tokens(tokenizer, text, **kwargs):
    """The tokenizer's encoding of plain ``text``: a layout tokenizer's (UDOP's:
    it takes word ``boxes``) through its ``text_target``, as HF documents for
    decoder targets."""
    if "boxes" in inspect.signature(tokenizer.__call__).parameters:
        return tokenizer(text_target=text, **kwargs)
    return tokenizer(text, **kwargs)


def _naive_encoder_decoder_scores(adapter, images):
    """HF's own loss on labels that keep only the class tokens. BART and T5: the
    decoder reads the answer as the tokenizer frames it (``<s> ... </s>``,
    ``... </s>``), shifted right behind the decoder start token, as HF builds it
    from unmasked labels. T5Gemma 2 (no ``decoder_start_token_id``): the bare
    answer, shifted right behind the decoder's BOS by HF's own
    ``prepare_decoder_input_ids_from_labels`` (its ``generate`` starts there
    too)."""
    tokenizer = adapter.processor.tokenizer
    text = adapter.model.config.get_text_config()
    decoder_start = getattr(text, "decoder_start_token_id", None)
    framing = decoder_start is not None
    answer = _tokens(tokenizer, ANSWER, add_special_tokens=False)["input_ids"]
    lead = _tokens(tokenizer, ANSWER)["input_ids"].index(answer[0]) if framing else 0
    out = np.zeros((len(images), len(NAMES)))
    for i, image in enumerate(images):
        batch = dict(adapter.prepare([image], [adapter.format_prompt(PROMPT)]))
        for c, name in enumerate(NAMES):
            labels = _tokens(tokenizer, f"{ANSWER} {name}", add_special_tokens=framing)
            labels = labels["input_ids"]
            target = _tokens(tokenizer, f"{ANSWER} {name}", add_special_tokens=False)
            n_target = len(target["input_ids"]) - len(answer)
            start = lead + len(answer)
            masked = [-100] * len(labels)
            masked[start : start + n_target] = labels[start : start + n_target]
            if framing:
                decoder = torch.tensor([[decoder_start, *labels[:-1]]])
            else:  # HF's own shift, of the unmasked labels (the prefix is read)
                shift = adapter.model.prepare_decoder_input_ids_from_labels
                decoder = shift(torch.tensor([labels]))
            with torch.no_grad():
                loss = adapter.model(
                    **batch, decoder_input_ids=decoder, labels=torch.tensor([masked])
                ).loss
            out[i, c] = -float(loss) * n_target
    return out


def _naive_decoder_prefix_scores(path, images):
    """Pix2Struct and vision-encoder-decoder: the encoder reads the image alone
    and the prompt is the decoder's prefix. HF's logits over the decoder
    sequence ``decoder_start_token_id``, the prompt's ids, the answer's, the
    class name's (the tokenizer's, no special tokens), one pass per class."""
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = processor.tokenizer

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    answer = ids(ANSWER)
    prefix = [model.config.decoder_start_token_id, *ids(PROMPT), *answer]
    out = np.zeros((len(images), len(NAMES)))
    for i, image in enumerate(images):
        if model.config.model_type == "pix2struct":
            pixels = processor(
                images=[image],
                return_tensors="pt",
                max_patches=processor.image_processor.max_patches,
            )
        else:
            pixels = processor.image_processor(images=[image], return_tensors="pt")
        for c, name in enumerate(NAMES):
            target = ids(f"{ANSWER} {name}")[len(answer) :]
            decoder = torch.tensor([prefix + target[:-1]])
            with torch.no_grad():
                logits = model(**pixels, decoder_input_ids=decoder).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            start = len(prefix) - 1
            out[i, c] = sum(logp[start + k, t].item() for k, t in enumerate(target))
    return out


def _naive_decoder_prompt_scores(adapter, images):
    """A model whose processor takes no text (PP-FormulaNet: the encoder reads
    the image alone): HF's logits over the decoder's ``</s> <s>`` (its start
    token, then BOS, as HF's ``shift_tokens_right`` makes of a labelled
    ``<s> ... </s>``), the prompt, the answer prefix and the class name."""
    tokenizer = adapter.processor.tokenizer
    start = [
        adapter.model.config.get_text_config().decoder_start_token_id,
        tokenizer.bos_token_id,
    ]
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    out = np.zeros((len(images), len(NAMES)))
    for i, image in enumerate(images):
        pixels = adapter.processor(images=[image], return_tensors="pt")
        for c, name in enumerate(NAMES):
            joint = tokenizer(f"{ANSWER} {name}", add_special_tokens=False)
            target = joint["input_ids"][len(answer) :]
            ids = torch.tensor([start + prompt + answer + target])
            with torch.no_grad():
                logits = adapter.model(**pixels, decoder_input_ids=ids).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            first = len(start) + len(prompt) + len(answer)
            out[i, c] = sum(logp[first - 1 + k, t].item() for k, t in enumerate(target))
    return out


def _naive_scores(path, images):
    adapter = load_adapter(path, device="cpu")
    config = adapter.model.config
    if "text" not in inspect.signature(adapter.processor.__call__).parameters:
        return _naive_decoder_prompt_scores(adapter, images)
    if getattr(adapter, "decoder_prefix", False):
        return _naive_decoder_prefix_scores(path, images)
    # InstructBLIP's own config does not say so; its Flan-T5 text config does
    if config.is_encoder_decoder or config.get_text_config().is_encoder_decoder:
        return _naive_encoder_decoder_scores(adapter, images)
    tokenizer = adapter.processor.tokenizer
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    text = adapter.format_prompt(PROMPT)
    # PaliGemma marks the answer (suffix) with token_type_ids 1: causal there
    suffix_type = "token_type_ids" if adapter.family == "paligemma" else None
    out = np.zeros((len(images), len(NAMES)))
    for i, image in enumerate(images):
        batch = dict(adapter.prepare([image], [text]))
        batch.pop("position_ids", None)
        n = batch["input_ids"].shape[1]
        for c, name in enumerate(NAMES):
            joint = tokenizer(f"{ANSWER} {name}", add_special_tokens=False)["input_ids"]
            target = joint[len(answer) :]
            extra = torch.tensor([answer + target])
            full = {}
            for key, value in batch.items():
                if torch.is_tensor(value) and value.dim() > 2 and value.shape[1] == n:
                    # Mllama's cross_attention_mask (tokens x images x tiles): a
                    # new token reads the tiles the last one reads, as HF's
                    # generate extends it
                    tail = value[:, -1:].expand(-1, extra.shape[1], *value.shape[2:])
                    value = torch.cat([value, tail], dim=1)
                elif (
                    torch.is_tensor(value) and value.dim() == 2 and value.shape[1] == n
                ):
                    fill = (
                        extra
                        if key == "input_ids"
                        else torch.full_like(
                            extra, int(key in ("attention_mask", suffix_type))
                        )
                    )
                    value = torch.cat([value, fill.to(value.dtype)], dim=1)
                full[key] = value
            with torch.no_grad():
                logits = adapter.model(**full, use_cache=False).logits[0].float()
            # GIT's logits cover its image tokens too, before the text's
            logits = logits[-full["input_ids"].shape[1] :]
            logp = torch.log_softmax(logits, dim=-1)
            start = n + len(answer)
            out[i, c] = sum(logp[start - 1 + k, t].item() for k, t in enumerate(target))
    return out


@pytest.mark.parametrize("model_type", CLASSIFIED_CASES + VARIANTS)
def test_generative_classifier(built, model_type, images):
    path = _path(built, model_type)
    clf = VLMGenerativeClassifier(
        path, class_names=NAMES, device="cpu", answer_prefix=ANSWER, prompt=PROMPT
    ).fit(images, [0, 1])
    np.testing.assert_allclose(
        clf.decision_function(images), _naive_scores(path, images), atol=1e-4
    )
    for strategy in ("open_ended", "closed_set"):
        clf.set_params(strategy=strategy, max_new_tokens=2)
        assert set(clf.predict(images)) <= {0, 1, -1}


def _weights(path):
    return load_file(f"{path}/model.safetensors")


@pytest.mark.parametrize("model_type", _cases(sorted(set(CLASSIFIED) - set(TUNED))))
def test_tuner_refuses_what_the_traits_refuse(built, model_type, images, tmp_path):
    tuner = VLMClassificationTuner(
        _path(built, model_type), class_names=NAMES, output_dir=tmp_path, device="cpu"
    )
    reason = _refused(model_type)["tuner"]
    with pytest.raises(
        ValueError, match=rf"not train {model_type} .*{re.escape(reason)}"
    ):
        tuner.fit(images, NAMES)


@pytest.mark.parametrize("model_type", _cases(TUNED) + VARIANTS)
def test_tuner_step_per_train(built, model_type, images, tmp_path):
    path = _path(built, model_type)
    base = _weights(path)
    none = _refused(model_type).get("tuner:projector")  # it has no projector
    for train in ("lora", "projector", "full"):
        tuner = VLMClassificationTuner(
            path,
            train=train,
            class_names=NAMES,
            batch_size=2,
            max_iter=2,  # the first step is the warmup's, at lr 0
            output_dir=tmp_path / train,
            random_state=0,
            device="cpu",
        )
        if none and train == "projector":
            with pytest.raises(ValueError, match=re.escape(none)):
                tuner.fit(images, NAMES)
            continue
        tuner.fit(images, NAMES)
        assert set(tuner.predict(images)) <= set(NAMES)
        tuned = _weights(tuner.model_path_)
        # ShieldGemma 2's checkpoint holds Gemma 3 one "model." deeper (inside
        # its image classifier); skvlm tunes and saves that Gemma 3 model
        saved = {k: k if k in tuned else k.removeprefix("model.") for k in base}
        changed = {k for k in base if not torch.equal(base[k], tuned[saved[k]])}
        assert changed, train
        # the vision tower never trains (train_vision=False); projectors named
        # after it (Qwen's merger, LightOnOCR's vision_projection, Mistral
        # Large 4's vision_language_adapter, Gemma 4's embed_vision, HyperCLOVA
        # X's vision_projector, DeepSeek-VL's aligner, Granite-Docling's
        # connector in its vision model, Muse's vision_adapter, Molmo 2's
        # image_pooling_2d and image_projector, as saved) do
        projectors = (
            "merger",
            "vision_projection",
            "vision_language_adapter",
            "embed_vision",
            "vision_projector",
            "aligner",
            "vision_model.connector",
            "vision_encoder.adapter",  # Dots 3 Note's merger, as saved
            "vision_adapter",
            "image_pooling_2d",
            "image_projector",
            "vision_embedder",  # Gemma 4 unified's embed_vision, as saved
            "vision_embed_tokens",  # Fuyu's patch embedding, its projector
        )
        tower = [k for k in changed if "vision" in k]
        assert not [k for k in tower if not any(p in k for p in projectors)], train
        # ... under its traits' name too (the loaded model's names: a
        # checkpoint may save the tower under another), projector parts inside
        # it aside
        before = load_adapter(path, device="cpu")
        after = load_adapter(tuner.model_path_, device="cpu").model.state_dict()
        traits = before.traits
        inside = [
            p for p in traits.projector or () if p.startswith(f"{traits.vision}.")
        ]
        tower = {
            k
            for k, v in before.model.state_dict().items()
            if k.startswith(f"{traits.vision}.")
            and not any(k == p or k.startswith(f"{p}.") for p in inside)
            and not torch.equal(v, after[k])
        }
        assert traits.vision is None or any(
            k.startswith(f"{traits.vision}.") for k in after
        ), traits.vision
        assert not tower, (train, sorted(tower)[:3])


# -- zero-shot: HF's own embeddings, cosine logits written out here --------------------
# SigLIP's text tower was trained on max-length padding; CLIP's on the longest.
PADDING = {"siglip": "max_length", "siglip2": "max_length"}


def _hf_zero_shot_logits(path, images, padding):
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        pixels = processor.image_processor(images=images, return_tensors="pt")
        image = model.get_image_features(**pixels).pooler_output
        kwargs = {"padding": padding}
        if padding == "max_length":
            kwargs["max_length"] = model.config.text_config.max_position_embeddings
        tokens = processor.tokenizer(
            [f"a photo of a {name}." for name in NAMES], return_tensors="pt", **kwargs
        )
        tokens.pop("token_type_ids", None)
        text = model.get_text_features(**tokens).pooler_output
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        bias = float(model.logit_bias) if hasattr(model, "logit_bias") else 0.0
        return (model.logit_scale.exp() * image @ text.T + bias).numpy()


@pytest.mark.parametrize("model_type", ZERO_SHOT)
def test_zero_shot_classifier(built, model_type, images):
    path = _path(built, model_type)
    clf = CLIPZeroShotClassifier(
        path, class_names=NAMES, templates=["a photo of a {}."]
    ).fit(images, [0, 1])
    logits = _hf_zero_shot_logits(path, images, PADDING.get(model_type, "longest"))
    np.testing.assert_allclose(
        clf.decision_function(images), logits, rtol=1e-4, atol=1e-4
    )
