"""Independent references for the family matrix: HF's own outputs, pooled by hand.

Each family's reference runs the checkpoint through transformers alone (HF's
``output_hidden_states``, ``get_image_features``, the tower's ``pooler_output``),
one image at a time where the family pads, and writes down by hand which tokens
are what (CLS, patches, image tokens, prompt text). Nothing here calls skvlm's
adapters; ``load_processor`` (from ``skvlm.testing``) loads HF's own processor
classes, without torchvision.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

from skvlm.testing._generative import load_processor

DEFAULT_PROMPT = "What type of object is in this photo?"
# Prompts of different lengths, so that batches are padded.
PROMPTS = ["What is this?", "Describe the object in this photo in one word", "a"]
CHAT_PROMPTS = [
    DEFAULT_PROMPT,
    "a cat",
    "describe the object in this picture .",
    "is it a dog ?",
]


# -- what a reference is ------------------------------------------------------------
@dataclass
class Tokens:
    """One stage of one example, unpadded, as HF computes it.

    ``states[k]`` is stack entry k, shape (tokens, dim). ``pooled`` marks the
    tokens ``mean`` and ``max`` reduce over (None: all), ``image`` and ``text``
    the image-token and prompt-text positions, ``pooler`` the model's own
    pooled vector of the last entry.
    """

    states: list
    pooled: np.ndarray | None = None
    image: np.ndarray | None = None
    text: np.ndarray | None = None
    pooler: np.ndarray | None = None


@dataclass
class Example:
    """The reference of one image (and prompt): its stages, and facts about it."""

    stages: dict
    facts: dict = field(default_factory=dict)


def pool(tokens, layer, pooling):
    """The documented pooling of ``tokens.states[layer]``, written out by hand."""
    hidden = tokens.states[layer]
    if pooling == "pooler":
        assert layer in (-1, len(tokens.states) - 1)
        return tokens.pooler
    if isinstance(pooling, int):
        return hidden[pooling]  # a position among the (unpadded) tokens
    if pooling == "cls":
        return hidden[0]
    if pooling == "last":
        return hidden[-1]
    if pooling in ("mean", "max"):
        rows = hidden if tokens.pooled is None else hidden[tokens.pooled]
        return rows.mean(0) if pooling == "mean" else rows.max(0)
    return hidden[tokens.image if pooling == "image_mean" else tokens.text].mean(0)


def expected(examples, stage, layers, pooling):
    """(n_examples, n_layers * dim): each example's layers pooled and concatenated."""
    return np.stack(
        [
            np.concatenate([pool(ex.stages[stage], k, pooling) for k in layers])
            for ex in examples
        ]
    )


def _np(tensor):
    return tensor.detach().float().numpy()


def _text_masks(ids, image_token_id, special_ids):
    image = ids == image_token_id
    text = ~image & ~np.isin(ids, sorted(special_ids))
    return image, text


class HF:
    """A checkpoint loaded by transformers alone."""

    def __init__(self, path, auto=AutoModelForImageTextToText):
        self.model = auto.from_pretrained(path).eval()
        self.processor = load_processor(path)
        tokenizer = getattr(self.processor, "tokenizer", None)
        image_token = getattr(self.model.config, "image_token_id", None)
        self.specials = (
            set(tokenizer.all_special_ids) - {image_token}
            if tokenizer is not None
            else set()
        )


# -- vision towers: CLIP, SigLIP, SigLIP2, ViT, DINOv2 --------------------------------
def vision_tower_reference(path, images, prompts):
    """One padded HF batch; SigLIP2's own ``pixel_attention_mask`` unpads it."""
    model = AutoModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    processor = getattr(processor, "image_processor", processor)
    inputs = dict(processor(images=images, return_tensors="pt"))
    tower = getattr(model, "vision_model", model)
    with torch.no_grad():
        out = tower(**inputs, output_hidden_states=True)
        projected = (
            model.get_image_features(**inputs).pooler_output
            if hasattr(model, "get_image_features")
            else None
        )
    has_cls = model.config.model_type in ("clip", "vit", "dinov2")
    mask = inputs.get("pixel_attention_mask")
    examples = []
    for i in range(len(images)):
        valid = (
            np.ones(out.hidden_states[0].shape[1], bool)
            if mask is None
            else mask[i].numpy().astype(bool)
        )
        states = [_np(h[i])[valid] for h in out.hidden_states]
        pooled = np.arange(len(states[0])) > 0 if has_cls else None
        stages = {
            "vision": Tokens(states, pooled=pooled, pooler=_np(out.pooler_output[i]))
        }
        if projected is not None:
            vector = _np(projected[i])
            stages["projector"] = Tokens([vector[None]], pooler=vector)
        examples.append(Example(stages, facts={"padded": not valid.all()}))
    return examples


# -- LLaVA-1.5, LLaVA-NeXT and the generic adapter (VipLLaVA) -------------------------
def _clip_tower_tokens(tower, pixels):
    """A CLIP tower's stack of one image; pooler = the post-layernormed CLS."""
    with torch.no_grad():
        out = tower(**pixels, output_hidden_states=True)
        pooler = tower.post_layernorm(out.last_hidden_state[:, 0])[0]
    states = [_np(h[0]) for h in out.hidden_states]
    return Tokens(states, pooled=np.arange(len(states[0])) > 0, pooler=_np(pooler))


def _language_tokens(hf, inputs, states, n_entries=4):
    # embeddings + 3 blocks, the last after the final norm
    assert len(states) == n_entries
    ids = inputs["input_ids"][0].numpy()
    image, text = _text_masks(ids, hf.model.config.image_token_id, hf.specials)
    return Tokens([_np(h[0]) for h in states], image=image, text=text)


def _llava_language(hf, image, text):
    inputs = hf.processor(images=[image], text=[text], return_tensors="pt")
    with torch.no_grad():
        states = hf.model.model(**inputs, output_hidden_states=True).hidden_states
    return _language_tokens(hf, inputs, states)


def llava_reference(path, images, prompts, *, template="USER: <image>\n{} ASSISTANT:"):
    hf = HF(path)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            tokens = hf.model.model.get_image_features(**pixels).pooler_output[0]
        examples.append(
            Example(
                {
                    "vision": _clip_tower_tokens(hf.model.model.vision_tower, pixels),
                    "projector": Tokens([_np(tokens)]),
                    "language": _llava_language(hf, image, template.format(prompt)),
                },
                facts={"projector_tokens": len(tokens)},
            )
        )
    return examples


def llava_next_reference(path, images, prompts):
    """Every view of an image (base view first), concatenated; each CLS excluded."""
    hf = HF(path)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        pixels = hf.processor.image_processor(images=[image], return_tensors="pt")
        n_views = pixels["pixel_values"].shape[1]
        with torch.no_grad():
            out = hf.model.model.vision_tower(
                pixels["pixel_values"][0], output_hidden_states=True
            )
            tokens = hf.model.model.get_image_features(**pixels).pooler_output[0]
        per_view = out.hidden_states[0].shape[1]
        states = [_np(h.flatten(0, 1)) for h in out.hidden_states]
        vision = Tokens(
            states,
            pooled=np.arange(len(states[0])) % per_view != 0,
            pooler=_np(out.pooler_output[0]),
        )
        text = f"[INST] <image>\n{prompt} [/INST]"
        examples.append(
            Example(
                {
                    "vision": vision,
                    "projector": Tokens([_np(tokens)]),
                    "language": _llava_language(hf, image, text),
                },
                facts={"views": n_views, "projector_tokens": len(tokens)},
            )
        )
    return examples


# -- BLIP-2 (OPT and T5) and InstructBLIP -----------------------------------------------
def _blip_reference(path, images, prompts, *, text_of, states_of, qformer_text=None):
    hf = HF(path)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = hf.model.vision_model(**pixels, output_hidden_states=True)
        pooler = hf.model.vision_model.post_layernorm(out.last_hidden_state[:, 0])
        if qformer_text is None:
            queries = hf.model.get_image_features(**pixels).pooler_output
        else:
            # the Q-Former reads the instruction: without a prompt, the default one
            inputs = hf.processor(
                images=images, text=[qformer_text] * len(images), return_tensors="pt"
            )
            queries = hf.model.get_image_features(
                pixel_values=inputs["pixel_values"],
                qformer_input_ids=inputs["qformer_input_ids"],
                qformer_attention_mask=inputs["qformer_attention_mask"],
            ).pooler_output
    examples = []
    for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        states = [_np(h[i]) for h in out.hidden_states]
        inputs = hf.processor(
            images=[image], text=[text_of(prompt)], return_tensors="pt"
        )
        with torch.no_grad():
            language = states_of(hf.model, inputs)
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        states,
                        pooled=np.arange(len(states[0])) > 0,
                        pooler=_np(pooler[i]),
                    ),
                    "projector": Tokens([_np(queries[i])]),
                    "language": _language_tokens(hf, inputs, language),
                },
                facts={"projector_tokens": queries.shape[1]},
            )
        )
    return examples


def _decoder_states(model, inputs):
    out = model(**inputs, output_hidden_states=True)
    return out.language_model_outputs.hidden_states


def _t5_encoder_states(model, inputs):
    start = torch.zeros(1, 1, dtype=torch.long)
    out = model(**inputs, decoder_input_ids=start, output_hidden_states=True)
    return out.language_model_outputs.encoder_hidden_states


def blip2_reference(path, images, prompts):
    return _blip_reference(
        path,
        images,
        prompts,
        text_of="Question: {} Answer:".format,
        states_of=_decoder_states,
    )


def blip2_t5_reference(path, images, prompts):
    # For an encoder-decoder LM, the language stage is the encoder.
    return _blip_reference(
        path,
        images,
        prompts,
        text_of="Question: {} Answer:".format,
        states_of=_t5_encoder_states,
    )


def instructblip_reference(path, images, prompts):
    return _blip_reference(
        path,
        images,
        prompts,
        text_of=str,
        states_of=_decoder_states,
        qformer_text=DEFAULT_PROMPT,
    )


def instructblip_t5_reference(path, images, prompts):
    # For an encoder-decoder LM, the language stage is the encoder.
    return _blip_reference(
        path,
        images,
        prompts,
        text_of=str,
        states_of=_t5_encoder_states,
        qformer_text=DEFAULT_PROMPT,
    )


# -- PaliGemma ---------------------------------------------------------------------------
def paligemma_inputs(processor, image, prompt):
    inputs = processor(images=[image], text=["<image>" + prompt], return_tensors="pt")
    inputs.pop("labels")
    return inputs


def paligemma_reference(path, images, prompts):
    """SigLIP tower without CLS (and, in PaliGemma's checkpoints, without a head)."""
    hf = HF(path)
    pixels = hf.processor.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        vision = hf.model.model.vision_tower(**pixels, output_hidden_states=True)
        tokens = hf.model.model.get_image_features(**pixels).pooler_output
    examples = []
    for i, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        # the prefix's token_type_ids make the image and prompt attend both ways
        inputs = paligemma_inputs(hf.processor, image, prompt)
        with torch.no_grad():
            states = hf.model.model(**inputs, output_hidden_states=True).hidden_states
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[i]) for h in vision.hidden_states]),
                    "projector": Tokens([_np(tokens[i])]),
                    "language": _language_tokens(hf, inputs, states),
                },
                facts={"projector_tokens": tokens.shape[1]},
            )
        )
    return examples


# -- Qwen2-VL, Qwen2.5-VL, Qwen3-VL ----------------------------------------------------
QWEN_SPECIAL = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|endoftext|>",
]


def chat(prompt):
    return [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": prompt}],
        }
    ]


def _packed_positions(grid, merge):
    t, h, w = (int(v) for v in grid[0])
    hb, wb, i, j = np.meshgrid(
        np.arange(h // merge),
        np.arange(w // merge),
        np.arange(merge),
        np.arange(merge),
        indexing="ij",
    )
    rows, cols = (hb * merge + i).reshape(-1), (wb * merge + j).reshape(-1)
    return torch.as_tensor(np.tile(np.stack([rows, cols], 1), (t, 1)))


def _raster(hidden, grid):
    """Packed (patches, dim) of one image, in processor order, to raster order.

    The processor packs patches merge block by merge block (block rows, block
    columns, then the 2 x 2 patches of a block); the (row, column) of each packed
    patch, written out here, equals transformers' ``get_vision_position_ids``
    (5.9+).
    """
    rows, cols = _packed_positions(grid, 2).T
    return hidden[torch.argsort(rows * int(grid[0, 2]) + cols)]


def _qwen_one(model, processor, image, prompt, tokenizer_specials=False):
    visual = model.model.visual
    permuted = False
    pixels = processor.image_processor(images=[image], return_tensors="pt")
    grid = pixels["image_grid_thw"]
    with torch.no_grad():
        last = []
        handle = visual.blocks[-1].register_forward_hook(
            lambda module, args, output: last.append(output)
        )
        vision = visual(
            pixels["pixel_values"], grid_thw=grid, output_hidden_states=True
        )
        handle.remove()
        hidden = list(vision.hidden_states)
        if hidden[-1].shape != hidden[0].shape:
            # GLM-4V records the merger's output as its last entry; the stack's
            # last entry is the last block's output, read off that block.
            hidden[-1] = last[0]
        if hasattr(visual, "window_size"):
            # Qwen2.5-VL's blocks see window-permuted patches: recover the
            # permutation by matching entry 0 to the unpermuted patch embeddings.
            embedded = visual.patch_embed(pixels["pixel_values"])
            permutation = torch.cdist(hidden[0], embedded).argmin(dim=1)
            assert len(set(permutation.tolist())) == len(permutation)
            inverse = torch.argsort(permutation)
            hidden = [h[inverse] for h in hidden]
            permuted = bool((permutation != torch.arange(len(permutation))).any())
        features = model.model.get_image_features(pixels["pixel_values"], grid)
        # Qwen3-VL: the DeepStack mergers' outputs, then the main merger's
        projector = [f[0] for f in getattr(features, "deepstack_features", [])]
        projector.append(features.pooler_output[0])
        text = processor.apply_chat_template(
            chat(prompt), add_generation_prompt=True, tokenize=False
        )
        inputs = processor(images=[image], text=[text], return_tensors="pt")
        language = model.model(**inputs, output_hidden_states=True, use_cache=False)
    ids = inputs["input_ids"][0].numpy()
    if tokenizer_specials:  # GLM-4V: its own markers, all special tokens
        special = _special_ids(processor.tokenizer, model.config.image_token_id)
    else:
        special = processor.tokenizer.convert_tokens_to_ids(QWEN_SPECIAL)
    image_mask, text_mask = _text_masks(ids, model.config.image_token_id, special)
    return Example(
        {
            "vision": Tokens([_np(_raster(h, grid)) for h in hidden]),
            "projector": Tokens([_np(p) for p in projector]),
            "language": Tokens(
                [_np(h[0]) for h in language.hidden_states],
                image=image_mask,
                text=text_mask,
            ),
        },
        facts={"permuted": permuted},
    )


def qwen_reference(path, images, prompts, *, tokenizer_specials=False):
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = load_processor(path)
    return [
        _qwen_one(model, processor, image, prompt, tokenizer_specials)
        for image, prompt in zip(images, prompts, strict=True)
    ]


# -- Idefics3 and SmolVLM ----------------------------------------------------------------
# Tokens that are not prompt text: BOS / turn markers, padding and the tile frame.
IDEFICS_SPECIAL = re.compile(
    r"<\|begin_of_text\|>|<\|im_start\|>|<\|im_end\|>|<end_of_utterance>|"
    r"<\|reserved_special_token_0\|>|<fake_token_around_image>|<global-img>|<row_\d_col_\d>"
)


def _idefics_one(model, processor, image, prompt):
    pixels = processor.image_processor(images=[[image]], return_tensors="pt")
    patch = model.config.vision_config.patch_size
    with torch.no_grad():
        features = model.model.get_image_features(
            pixels["pixel_values"],
            pixels["pixel_attention_mask"],
            output_hidden_states=True,
        )
        text = processor.apply_chat_template(
            chat(prompt), add_generation_prompt=True, tokenize=False
        )
        inputs = processor(images=[[image]], text=[text], return_tensors="pt")
        language = model.model(**inputs, output_hidden_states=True, use_cache=False)
    # A patch counts when any of its pixels is real.
    mask = pixels["pixel_attention_mask"][0].bool()
    tiles, height, width = mask.shape
    valid = (
        mask.view(tiles, height // patch, patch, width // patch, patch).any(4).any(2)
    )
    valid = valid.reshape(-1).numpy()
    dim = features.hidden_states[0].shape[-1]
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    image_mask = np.array([t == "<image>" for t in tokens])
    special = np.array([bool(IDEFICS_SPECIAL.fullmatch(t)) for t in tokens])
    return Example(
        {
            "vision": Tokens(
                [_np(h.reshape(-1, dim))[valid] for h in features.hidden_states]
            ),
            "projector": Tokens([_np(features.pooler_output[0])]),
            "language": Tokens(
                [_np(h[0]) for h in language.hidden_states],
                image=image_mask,
                text=~image_mask & ~special,
            ),
        },
        facts={"tiles": tiles},
    )


def idefics_reference(path, images, prompts):
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = load_processor(path)
    return [
        _idefics_one(model, processor, image, prompt)
        for image, prompt in zip(images, prompts, strict=True)
    ]


# -- every other image-text-to-text family: HF's own outputs, one example at a time --
def _special_ids(tokenizer, image_token_id):
    """The tokenizer's special tokens (named and added ones marked special)."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return ids - {image_token_id}


def _flat_features(output):
    features = getattr(output, "pooler_output", output)
    if isinstance(features, (list, tuple)):
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    return features.reshape(-1, features.shape[-1])


def _one_row_streams(hidden):
    """One example's (tokens, [streams,] width) states: its row of a batch of
    one, streams first (AltUp) or after the tokens (hyper-connections)."""
    if hidden.dim() == 4 and hidden.shape[0] != 1:
        return hidden[:, 0].movedim(0, 1)
    return hidden[0]


def generic_reference(
    path,
    images,
    prompts,
    *,
    tower,
    nested,
    has_cls,
    placeholder,
    projector=True,
    base=None,
):
    """Language: HF's ``hidden_states``; projector: ``get_image_features``
    flattened (the vectors that fill the image positions, in order); vision:
    the tower's ``hidden_states`` on the image's tiles, tile after tile, each
    tile's CLS (if any) left out of ``mean``/``max``. ``base(model)`` is the
    module both are read from (default: ``model.model``)."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    core = model.model if base is None else base(model)
    config = model.config
    token_id = getattr(config, "image_token_id", None)
    if token_id is None:
        token_id = config.image_token_index
    special = _special_ids(processor.tokenizer, token_id)
    image_features = getattr(core, "get_image_features", None)
    image_names = inspect.signature(image_features).parameters if image_features else ()
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        if getattr(processor, "chat_template", None):
            text = processor.apply_chat_template(
                chat(prompt), add_generation_prompt=True, tokenize=False
            )
        else:
            text = f"{placeholder}\n{prompt}"
        extra = {}
        if "mm_token_type_ids" in inspect.signature(core.forward).parameters:
            extra["return_mm_token_type_ids"] = True
        inputs = dict(
            processor(
                images=[[image]] if nested else [image],
                text=[text],
                return_tensors="pt",
                **extra,
            )
        )
        inputs.pop("labels", None)
        with torch.no_grad():
            language = core(
                **inputs, output_hidden_states=True, use_cache=False
            ).hidden_states
            kwargs = {
                k: v
                for k, v in inputs.items()
                if k in image_names and k not in ("input_ids", "attention_mask")
            }
            features = (
                _flat_features(core.get_image_features(**kwargs)) if projector else None
            )
            pixels = inputs.get("pixel_values", inputs.get("pixel_values_images"))
            if tower is not None:  # a family whose vision stage skvlm offers
                pixels = pixels.reshape(-1, *pixels.shape[-3:])
                vision = tower(model)(pixel_values=pixels, output_hidden_states=True)
            else:
                vision = None
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        text_mask = ~image_mask & ~np.isin(ids, sorted(special))
        stages = {}
        if projector:
            assert image_mask.sum() == len(features)
            stages["projector"] = Tokens([_np(features)])
        if vision is not None:
            # a SAM tower's states are (tiles, height, width, channels) maps:
            # flattened row by row, as token sequences are
            states = [_np(h.reshape(-1, h.shape[-1])) for h in vision.hidden_states]
            per_tile = len(states[0]) // len(pixels)
            pooled = np.arange(len(states[0])) % per_tile >= int(has_cls)
            stages["vision"] = Tokens(states, pooled=pooled)
        examples.append(
            Example(
                {
                    **stages,
                    "language": Tokens(
                        # a hyper-connection model's (tokens, streams, width)
                        # states, streams side by side; Gemma 3n's AltUp
                        # states come (streams, 1, tokens, width)
                        [_np(_one_row_streams(h).flatten(1)) for h in language],
                        image=image_mask,
                        text=text_mask,
                    ),
                },
                facts={"tiles": len(pixels)},
            )
        )
    return examples


# -- Florence-2: DaViT tower, projector, BART encoder ---------------------------------
def florence2_reference(path, images, prompts):
    """Vision: the tower's ``hidden_states``, each (C, H, W) map as H*W tokens of
    width C, row by row; projector: ``get_image_features``; language: the BART
    encoder's ``encoder_hidden_states`` (the decoder is not the stage)."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    token_id = model.config.image_token_id
    special = _special_ids(processor.tokenizer, token_id)
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        inputs = processor(images=[image], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            vision = model.model.vision_tower(
                inputs["pixel_values"], output_hidden_states=True
            ).hidden_states
            features = model.model.get_image_features(inputs["pixel_values"])
            out = model(**inputs, output_hidden_states=True, use_cache=False)
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        text_mask = ~image_mask & ~np.isin(ids, sorted(special))
        examples.append(
            Example(
                {
                    "vision": Tokens(
                        [_np(h[0].flatten(1).transpose(0, 1)) for h in vision]
                    ),
                    "projector": Tokens([_np(features.pooler_output[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in out.encoder_hidden_states],
                        image=image_mask,
                        text=text_mask,
                    ),
                },
                facts={"decoder_entries": len(out.decoder_hidden_states)},
            )
        )
    return examples


# -- T5Gemma 2: SigLIP tower, Gemma 3's projector, Gemma encoder-decoder -----------------
def t5gemma2_reference(path, images, prompts):
    """Vision: the SigLIP tower's ``hidden_states`` (no CLS); projector:
    ``get_image_features``; language: the encoder's ``encoder_hidden_states``
    over ``"<start_of_image>\\n{prompt}"`` (the decoder is not the stage)."""
    hf = HF(path)
    model, processor = hf.model, hf.processor
    token_id = model.config.image_token_index
    special = _special_ids(processor.tokenizer, token_id)
    start = torch.tensor([[model.config.decoder.bos_token_id]])
    examples = []
    for image, prompt in zip(images, prompts, strict=True):
        text = f"<start_of_image>\n{prompt}"
        inputs = processor(images=[[image]], text=[text], return_tensors="pt")
        with torch.no_grad():
            vision = (
                model.get_encoder()
                .vision_tower(
                    pixel_values=inputs["pixel_values"], output_hidden_states=True
                )
                .hidden_states
            )
            features = model.get_image_features(inputs["pixel_values"]).pooler_output
            out = model(**inputs, decoder_input_ids=start, output_hidden_states=True)
        ids = inputs["input_ids"][0].numpy()
        image_mask = ids == token_id
        text_mask = ~image_mask & ~np.isin(ids, sorted(special))
        examples.append(
            Example(
                {
                    "vision": Tokens([_np(h[0]) for h in vision]),
                    "projector": Tokens([_np(features[0])]),
                    "language": Tokens(
                        [_np(h[0]) for h in out.encoder_hidden_states],
                        image=image_mask,
                        text=text_mask,
                    ),
                },
            )
        )
    return examples


# -- Pixtral towers: Mistral 3, LLaVA with a Pixtral tower ---------------------------
def pixtral_reference(path, images, prompts):
    """:func:`generic_reference` for projector and language; vision: the
    tower's ``hidden_states`` of the image alone (a one-image sequence, nothing
    packed), its patches in the tower's raster order, all pooled (no CLS)."""
    examples = generic_reference(
        path,
        images,
        prompts,
        tower=None,
        nested=False,
        has_cls=False,
        placeholder="[IMG]",
    )
    hf = HF(path)
    base = hf.model.model
    tower = (
        base.vision_encoder if hasattr(base, "vision_encoder") else base.vision_tower
    )
    patch = hf.model.config.vision_config.patch_size
    for image, example in zip(images, examples, strict=True):
        text = [hf.processor.image_token]
        inputs = hf.processor(images=[image], text=text, return_tensors="pt")
        (height, width) = inputs["image_sizes"][0].tolist()
        with torch.no_grad():
            out = tower(
                inputs["pixel_values"],
                image_sizes=inputs["image_sizes"],
                output_hidden_states=True,
            )
        states = [_np(h[0]) for h in out.hidden_states]
        assert len(states[0]) == (height // patch) * (width // patch)
        example.stages["vision"] = Tokens(states)
        example.facts["patches"] = len(states[0])
    return examples
