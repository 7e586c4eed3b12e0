"""What skvlm knows about each model family, in one declarative place.

A family's traits say where its parts are (vision tower, the tower's blocks,
projector, language model, LM head, as dotted paths from the loaded HF model,
the names of ``named_parameters``), how its processor takes a batch of images
(``"flat"``: one image per prompt in one list; ``"nested"``: one list per
prompt), how the rows of ``pixel_values`` map back to images (``views``), which
modules LoRA adapts by default and what the generative scorer can do with its
cache. Most of it is derived from transformers' own structure
(:func:`derive_traits` looks the parts up under the names transformers uses),
so a new family needs no entry, or one short line in :data:`TRAITS` that
overrides what cannot be derived.

``views`` values:

- ``"rows"``: ``pixel_values`` holds one row per image.
- ``"tokens"``: rows are tiles (crops) of the images, in order, each tile
  giving the same number of image tokens; tile counts per image are read off
  the image-token counts of the prompts.
- ``"anyres"``: ``pixel_values`` is (images, views, C, H, W) padded, with the
  valid views given by ``image_sizes`` and ``image_grid_pinpoints``
  (LLaVA-NeXT, LLaVA-OneVision).
- ``"packed"``: patches of all images packed in one sequence (Qwen-style,
  Pixtral); the family's own adapter unpacks them, or the generic adapter
  (:mod:`skvlm.models._pixtral`, :mod:`skvlm.models._packed`).
- ``"tiles"``: ``pixel_values`` is (prompts, images, tiles, C, H, W), every
  image padded to the processor's ``max_image_tiles`` with the valid tiles
  marked in ``aspect_ratio_mask`` (Mllama); the family's adapter reads them.
- ``"crops"``: (images, crops, C, H, W) padded to the batch's most crops,
  with per-crop patch masks (Phi-4-multimodal); the family's adapter reads
  the real crops.
- ``"masked"``: (images, tiles, C, H, W) padded to the batch's most tiles,
  with the real tiles marked in ``pixel_attention_mask`` (images, tiles)
  (Granite-Docling); an image's tokens are those of its real tiles, in order.
- ``"sequences"``: (views, patches, channels * patch**2), each view a
  sequence of patches the tower embeds itself, every view of one size, the
  views of each image in a row, counted per image in ``image_num_crops``
  (Molmo 2: a low-resolution view, then overlapping crops); an image's tokens
  are those of all its views, in order.

``cache`` values: ``"kv"`` (a cache with per-layer keys and values: the
probabilistic scorer runs the prefix once and reuses it for every class),
``"recompute"`` (hybrid or linear-attention caches, whose recurrent state cannot
be shared across continuations: the scorer runs prompt and continuation again
for each class, at the cost of one full pass per class and image), or
``"auto"`` (decided from the cache the model returns).

``token_inputs`` names processor outputs aligned with the prompt's tokens
(their dimension 1) other than ``attention_mask``: tokens appended to the
prompt (a training answer, a scored class name) take the value of the prompt's
last token there, as transformers' ``generate`` extends them (Mllama's
``cross_attention_mask``, which says which image tiles each token reads).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace

import torch

__all__ = [
    "PACKED_TOWERS",
    "TIMM_MODEL",
    "TRAITS",
    "Traits",
    "derive_traits",
    "family_traits",
    "resolve_path",
]


@dataclass(frozen=True)
class Traits:
    """One family's traits; None fields are derived from the model (see module doc).

    Attributes
    ----------
    vision : str or None
        Path of the vision tower (``""``: the model itself, a vision-only
        encoder).
    vision_blocks : str, tuple of str or None
        Path, from the tower, of its list of transformer blocks; a tuple for a
        tower of several encoders run one after the other (their blocks make
        one stack, in that order: Mllama's adapter; in the generic adapter,
        :mod:`skvlm.models._chained`).
    projector : tuple of str or None
        Paths of the modules (or parameters) between tower and language model.
    language : str, tuple of str or None
        Path of the language model, whose decoder blocks are ``layers``; for
        the tuner, a tuple of the paths of an encoder-decoder's two stacks
        where no one module holds both (UDOP's ``encoder`` and ``decoder``).
    lm_head : str or None
        Path of the output projection to the vocabulary.
    language_blocks : tuple of str
        Names of the lists that hold the language model's blocks, under
        ``language`` (``"layers"``; T5's encoder and decoder: ``"block"``):
        the blocks whose linear layers LoRA adapts.
    images : {"flat", "nested"}
        How the processor takes the images of a batch.
    views : {"rows", "tokens", "anyres", "packed", "tiles", "crops", "masked", \
"sequences"}
        How the rows of ``pixel_values`` map back to images.
    placeholder : str or None
        The text that stands for the image in a prompt (default: the
        processor's ``image_token``).
    lora_targets : tuple of str or None
        Default LoRA target leaves in the language model's blocks (None: every
        linear layer there).
    cache : {"auto", "kv", "recompute"}
        What the probabilistic scorer does with the cache.
    token_inputs : tuple of str
        Token-aligned processor outputs that appended tokens continue (see
        module doc).
    class_token : {"auto", "first", "last", "none"}
        Where each view's class token sits in the tower's sequence
        (``"auto"``: first, if the tower's embeddings have one). A ``"last"``
        class token (Llama 4) is left out of ``mean``/``max``; ``cls`` is
        offered for a first one only.
    unsupported : dict
        ``stage -> reason`` for stages skvlm refuses for this family (also
        ``"generative"`` and ``"tuner"``, and ``"tuner:projector"`` for a
        family without a projector, which the tuner trains with
        ``train="lora"`` or ``"full"`` only).
    streams : int or None
        Residual streams the language model's blocks carry (hyper-connections,
        Gemma 3n's AltUp: each block reads and writes ``streams`` copies of
        the hidden state, merged into one only after the last block); None:
        derived from the text config's ``hc_mult``, ``hc_count`` or
        ``altup_num_inputs`` (1 without).
    last_entry : {"norm", "block"}
        What the language stage's last entry is: the final norm's output
        (``"norm"``, HF's ``hidden_states[-1]`` for most models) or the last
        block's (``"block"``: Gemma 3n, whose ``hidden_states`` end with its
        last block's AltUp streams, before they are merged and normed).
    train_pad : str or None
        The special token (its tokenizer attribute's stem: ``"bos"``) the
        tuner puts at a padded batch's masked positions, in place of id 0:
        Gemma 3n's pad token embeds to zeros, where its AltUp magnitude
        ``mean(x**2) ** 0.5`` has an infinite derivative, so a batch padded
        with it trains on NaN gradients.
    row_positions : bool
        Whether the model's multimodal RoPE positions of a row depend on the
        other rows of its batch (HunYuanVL numbers its image-index axis over
        the whole batch, not per sequence as its docs say): skvlm then
        computes each row's positions alone with the model's own
        ``compute_3d_position_ids``, so that a row's features do not depend
        on the batch it is in.
    unpad_images : bool
        Whether the processor pads a batch's images to one size (bottom and
        right, ``image_sizes`` holding each one's own) and the image encoder
        sees the padding (Emu3's VQ-VAE): skvlm then encodes each image cut
        to its own size alone and passes the model those features
        (:mod:`skvlm.models._vq`).
    prefix_tokens : str or None
        Path of the parameter whose rows are the tokens a packed tower puts
        before each image's patches (RADIO's class and register tokens), the
        first a class token; None: one class token, or none, per
        ``class_token``.
    base : str or None
        Path of the base model, whose forward the stages run and whose
        ``get_image_features`` gives the projector stage (``""``: the model
        itself); derived: ``"model"`` where the model has one.
    vision_head : str or None
        Path, from the tower, of the module that pools the tower's last
        state into its pooled output (SigLIP's and AIMv2's attention-pooling
        ``head``, ViT's ``pooler``); derived, None where the tower has none.
    language_norm : tuple of str or None
        Names, under a language stack (the language model, or the encoder
        of an encoder-decoder), of its final norm, the first present taken;
        None: transformers' usual names (:func:`final_norm`).
    grid_unit : {"patch", "token"}
        What a packed tower's patch grid (``*grid_thw``) counts: the tower's
        patches (``"patch"``, Qwen-style), or the language model's image
        tokens (``"token"``, Inkling 2: each token ``spatial_merge_size``
        x ``spatial_merge_size`` patches, packed token by token).
    """

    vision: str | None = None
    vision_blocks: str | None = None
    projector: tuple | None = None
    language: str | tuple | None = None
    lm_head: str | None = None
    language_blocks: tuple = ("layers",)
    images: str = "flat"
    views: str = "rows"
    placeholder: str | None = None
    lora_targets: tuple | None = None
    cache: str = "auto"
    token_inputs: tuple = ()
    class_token: str = "auto"
    unsupported: dict = field(default_factory=dict)
    streams: int | None = None
    last_entry: str = "norm"
    train_pad: str | None = None
    row_positions: bool = False
    unpad_images: bool = False
    prefix_tokens: str | None = None
    base: str | None = None
    vision_head: str | None = None
    language_norm: tuple | None = None
    grid_unit: str = "patch"


_BLIP = Traits(
    vision="vision_model",
    projector=("query_tokens", "qformer", "language_projection"),
    language="language_model",
    lm_head="language_model.lm_head",
    # OPT and Vicuna keep their blocks in "layers", Flan-T5 (both stacks) in "block"
    language_blocks=("layers", "block"),
    # Vicuna's final norm; OPT's decoder and T5's encoder call it final_layer_norm
    language_norm=("norm", "final_layer_norm"),
)

_UDOP_NO_PROJECTOR = (
    "it has no projector: a convolution embeds the image's patches straight "
    "at the encoder's width, and the encoder reads them beside the words (the "
    "vision stage's entry 0)"
)

_NO_PROJECTOR_TO_TRAIN = (
    "it has no projector to train: the image codes are rows of the language "
    "model's word embeddings, shared with the text"
)


_BLIP1_NO_PROJECTOR = (
    "it has no projector: its text decoder's cross-attention layers read the "
    "vision tower's output (its last_hidden_state) as it is (stage='vision' "
    "gives the tower's blocks)"
)

_NO_CONNECTOR = (
    "nothing stands between its encoder and its decoder: the decoder "
    "cross-attends to the encoder's last hidden state, after the encoder's "
    "final layer norm (the vision stage's last entry is the state before it)"
)

#: Per model type, what :func:`derive_traits` cannot find alone. One line each.
TRAITS = {
    "aya_vision": Traits(views="tokens"),
    "blip-2": _BLIP,
    # its processor puts the image (|SPEAKER| per patch) before the prompt
    # itself (skvlm.models._fuyu)
    "fuyu": Traits(
        projector=("model.vision_embed_tokens",),
        unsupported={
            "vision": "it has no vision tower: one linear layer embeds each raw "
            "pixel patch into the language model (the projector stage gives "
            "those embeddings)"
        },
    ),
    # BART encoder-decoder: its encoder and decoder blocks are both "layers"
    # (mBART-style encoders end with a layer_norm, BART's with none)
    "florence2": Traits(language="model.language_model", language_norm=("layer_norm",)),
    "gemma3": Traits(images="nested", placeholder="<start_of_image>"),
    "gemma4": Traits(images="nested"),
    # peft maps its MLP targets onto the fused expert weights (no LoRA dropout there)
    "glm4v_moe": Traits(lora_targets=("q_proj", "k_proj", "v_proj", "o_proj")),
    # its connector (coarse and fine routes) sits in the vision model
    "granite_docling": Traits(
        images="nested", views="masked", projector=("model.vision_model.connector",)
    ),
    "hunyuan_vl": Traits(
        projector=("model.vision_tower.patch_merger",),
        row_positions=True,
    ),
    "idefics2": Traits(images="nested", views="tokens"),
    "idefics3": Traits(images="nested"),
    "instructblip": _BLIP,
    "internvl": Traits(views="tokens"),
    "lighton_ocr": Traits(projector=("model.vision_projection",)),
    "llama4": Traits(
        views="tokens",
        language="language_model.model",
        lm_head="language_model.lm_head",
        class_token="last",
        # not the MoE router: a Linear that returns (scores, logits)
        lora_targets=(
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ),
    ),
    "lfm2_vl": Traits(images="nested"),
    "llava_next": Traits(views="anyres"),
    "llava_next_video": Traits(views="anyres"),
    "llava_onevision": Traits(views="anyres"),
    # its sparse-attention indexer keeps per-layer keys beside the KV cache
    "mistral_large4": Traits(cache="recompute"),
    "mllama": Traits(
        vision_blocks=("transformer.layers", "global_transformer.layers"),
        images="nested",
        views="tiles",
        token_inputs=("cross_attention_mask",),
    ),
    "phi4_multimodal": Traits(
        vision="model.embed_tokens_extend.image_embed.img_processor",
        projector=tuple(
            f"model.embed_tokens_extend.image_embed.{name}"
            for name in (
                "img_projection_up",
                "img_projection_down",
                "global_img_feature_extensor",
                "sub_img_feature_extensor",
            )
        ),
        language="model",
        views="crops",
        lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    ),
    "qianfan_ocr": Traits(placeholder="<image>", views="tokens"),
    # its vision entries are its blocks' (the last, the last block's output:
    # HF's last hidden state is after the final norm and the 2 x 2 merge)
    "ovis2": Traits(views="tokens"),
    "qwen3_5": Traits(cache="recompute"),
    "qwen3_5_moe": Traits(cache="recompute"),
    # Gemma 3 inside an image classifier (skvlm.models._shieldgemma2)
    "shieldgemma2": Traits(images="nested", placeholder="<start_of_image>"),
    "smolvlm": Traits(images="nested"),
    # a class token before each image's patches (its tower's cls_embeddings)
    "llava_onevision1_5": Traits(class_token="first"),
    "qwen4_exp": Traits(cache="recompute"),
    # its sparse-attention indexer keeps per-layer keys beside the KV cache
    "hy_v4_vl": Traits(
        projector=("model.vision_tower.patch_merger",), cache="recompute"
    ),
    "deepseek_ocr2": Traits(
        # the learned separator after each image's tokens is projector output
        projector=("model.multi_modal_projector", "model.view_separator"),
        # SAM's blocks, then the second encoder's (skvlm.models._chained)
        vision_blocks=("sam_encoder.layers", "vision_encoder.layers"),
    ),
    # its MoE blocks route each token by modality: moe_mm_token_type_ids
    "ernie4_5_vl_moe": Traits(
        projector=("model.resampler_model",),
        token_inputs=("moe_mm_token_type_ids",),
    ),
    "granite4_vision": Traits(
        views="anyres",
        projector=(
            "model.layerwise_projectors",
            "model.spatial_projectors",
            "model.image_newline",
        ),
        unsupported={
            "projector": "its Q-Formers give one set of image vectors per target "
            "decoder layer (deepstack and spatial groups, added inside the language "
            "model), and the image positions of its input are zeros, so no one "
            "sequence is the projector's output"
        },
    ),
    "pp_chart2table": Traits(
        # its processor does not expand the image; the chat template writes
        # <img>, the <imgpad> tokens and </img>
        placeholder="<img>",
    ),
    # its sparse-attention indexer keeps per-layer keys beside the KV cache; its
    # model class's get_image_features names no grid (the base model's does)
    "dots3_note": Traits(
        views="packed", projector=("model.vision_tower.merger",), cache="recompute"
    ),
    # Gemma encoder-decoder: LoRA and train="full" cover both stacks' "layers"
    # (the tower under the encoder is left out as vision)
    "t5gemma2": Traits(
        vision="model.encoder.vision_tower",
        projector=("model.encoder.multi_modal_projector",),
        language="model",
        lm_head="lm_head",
        images="nested",
        placeholder="<start_of_image>",
    ),
    "diffusion_gemma": Traits(
        vision="model.encoder.vision_tower",
        projector=("model.encoder.embed_vision",),
        language="model.encoder.language_model",
        images="nested",
        unsupported={
            **dict.fromkeys(
                ("generative", "tuner"),
                "its decoder denoises blocks of masked answer tokens in parallel "
                "(block diffusion), so it gives no left-to-right probability of "
                "an answer to score or to train on",
            ),
        },
    ),
    "minimax_m3_vl": Traits(views="packed"),
    # AltUp streams (altup_num_inputs); HF's hidden_states end with the last
    # block's streams, before they are merged and normed
    "gemma3n": Traits(
        last_entry="block",
        train_pad="bos",
    ),
    # each image's views (a low-res view, then overlapping crops) as patch
    # sequences, image_num_crops views per image
    "molmo2": Traits(views="sequences"),
    "muse_glimmer": Traits(
        views="packed",
        projector=("model.vision_adapter", "model.vision_projection"),
    ),
    "muse_spark": Traits(
        views="packed",
        projector=("model.vision_adapter", "model.vision_projection"),
    ),
    # a timm tower: its blocks are the timm model's
    "perception_lm": Traits(
        views="tokens", vision_blocks="timm_model.blocks", class_token="first"
    ),
    # its cache keeps the prompt in per-layer prefill buffers beside a sliding
    # window of keys and values (reference sliding attention)
    "unlimited_ocr": Traits(
        cache="recompute",
        # SAM's blocks, then the CLIP encoder's (skvlm.models._chained)
        vision_blocks=("sam_encoder.layers", "vision_encoder.encoder.layers"),
    ),
    "apertus1p5": Traits(
        unsupported={
            "vision": "it has no vision tower: a convolutional VQ tokenizer turns "
            "each 16 x 16 px cell into a discrete code that the language model "
            "embeds as a word (the projector stage gives those embeddings)",
            "tuner:projector": _NO_PROJECTOR_TO_TRAIN,
        }
    ),
    "gemma4_unified": Traits(
        images="nested",
        unsupported={
            "vision": "it has no vision tower: a patch embedding (layer norms "
            "around one linear layer, plus position embeddings) maps each raw "
            "pixel patch into the language model (the projector stage gives "
            "those embeddings)"
        },
    ),
    # a short convolution in every block keeps a recurrent state in the cache
    # its packed tower's image_grid_thw counts language tokens (2 x 2 patches)
    **dict.fromkeys(
        ("inkling2", "inkling2_loop"),
        Traits(
            cache="recompute",
            projector=("model.vision_tower.merger",),
            grid_unit="token",
        ),
    ),
    "inkling_mm_model": Traits(
        cache="recompute",
        # the whole tower maps pixels to the language model's width
        projector=(
            "model.vision_tower.encoder_layers",
            "model.vision_tower.final_norm",
        ),
        unsupported={
            "vision": "its tower folds each 16 px patch space-to-depth through "
            "linear layers into one vector, with no blocks over the image's "
            "tokens (the projector stage gives its output)"
        },
    ),
    # the model is its own base: the NemotronH causal LM and the RADIO tower
    # hang off it; the tower packs every image's patches (raster order) in one
    # sequence, a class and register tokens before each image's; Mamba-2
    # blocks keep a recurrent state in the cache
    "nemotron_h_omni": Traits(
        vision="vision_model",
        views="packed",
        class_token="first",
        prefix_tokens="vision_model.embeddings.cls_register_token",
        projector=("multi_modal_projector",),
        language="language_model.model",
        lm_head="language_model.lm_head",
        cache="recompute",
    ),
    # a VQ-GAN turns image cells into discrete codes, read as words: the
    # language model is the base model itself
    "chameleon": Traits(
        language="model",
        unsupported={
            "vision": "it has no vision tower: a convolutional VQ-GAN turns each "
            "image cell into a discrete code that the language model embeds as "
            "a word (the projector stage gives those embeddings)",
            "tuner:projector": _NO_PROJECTOR_TO_TRAIN,
        },
    ),
    "emu3": Traits(
        unpad_images=True,
        unsupported={
            "vision": "it has no vision tower: a convolutional VQ-VAE turns each "
            "image cell into a discrete code that the language model embeds as "
            "a word (the projector stage gives those embeddings, each row's "
            "end-of-line word included)",
            "tuner:projector": _NO_PROJECTOR_TO_TRAIN,
        },
    ),
    **dict.fromkeys(
        ("minicpm_ocr", "minicpmv4_6", "minicpmv4_7"),
        # Qwen3.5's linear-attention layers keep a recurrent state in the cache;
        # the tower packs every view of every image (skvlm.models._packed),
        # its blocks after insert_layer_id hold a 2 x 2 merged grid
        Traits(cache="recompute", projector=("model.merger",), views="packed"),
    ),
    # no image token id: image_embeds_position_mask marks the image's positions
    # (skvlm.models._kosmos2); appended tokens are text (mask 0)
    "kosmos-2": Traits(
        vision="vision_model",
        vision_blocks="model.encoder.layers",
        projector=("image_to_text_projection",),
        language="text_model.model",
        lm_head="text_model.lm_head",
        class_token="first",
        token_inputs=("image_embeds_position_mask",),
        language_norm=("layer_norm",),
    ),
    # a Pix2Struct-like tower over flattened patches, no class token
    "kosmos-2.5": Traits(
        vision="vision_model",
        vision_blocks="encoder.layer",
        projector=("image_to_text_projection",),
        language="text_model.model",
        lm_head="text_model.lm_head",
        class_token="none",
        token_inputs=("image_embeds_position_mask",),
        language_norm=("layer_norm",),
    ),
    # IDEFICS v1 (skvlm.models._idefics1): the image enters through gated
    # cross-attention layers (which keep nothing in the cache: the adapter's
    # held_inputs give each cached pass the image again); the projector the
    # tuner trains is what IDEFICS trained (cross-attention + resampler; the
    # resampler last: the adapter's projector stage reads it there)
    "idefics": Traits(
        projector=("model.gated_cross_attn_layers", "model.perceiver_resampler"),
        language="model",
        token_inputs=("image_attention_mask",),
    ),
    # Vision encoders and CLIP-style models (skvlm.models._vision, _encoders):
    # the tower is derived (``vision_model``), its blocks and pooling head too;
    # CLIP-style models project the pooled output
    **dict.fromkeys(
        ("clip", "metaclip_2", "altclip", "chinese_clip", "aimv2"),
        Traits(projector=("visual_projection",)),
    ),
    # vision-only checkpoints are the tower itself
    **dict.fromkeys(
        ("clip_vision_model", "chinese_clip_vision_model", "aimv2_vision_model"),
        Traits(vision="", projector=("visual_projection",)),
    ),
    **dict.fromkeys(("siglip_vision_model", "siglip2_vision_model"), Traits(vision="")),
    # hierarchical encoders: their stages (ALIGN: its EfficientNet blocks)
    **dict.fromkeys(
        ("convnext", "convnextv2", "hiera"), Traits(vision_blocks="encoder.stages")
    ),
    "dinov3_convnext": Traits(vision_blocks="model.stages"),
    **dict.fromkeys(("swin", "swinv2"), Traits(vision_blocks="encoder.layers")),
    "align": Traits(vision_blocks="encoder.blocks"),
    # BLIP (v1): a text decoder whose blocks cross-attend to the tower's last
    # states (skvlm.models._blip1); BERT keeps its blocks in encoder.layer
    "blip": Traits(
        vision="vision_model",
        vision_blocks="encoder.layers",
        projector=(),
        language="text_decoder.bert",
        language_blocks=("encoder.layer",),
        lm_head="text_decoder.cls",
        # its cache holds cross-attention states beside the keys and values
        cache="recompute",
        unsupported={
            "projector": _BLIP1_NO_PROJECTOR,
            "tuner:projector": _BLIP1_NO_PROJECTOR,
        },
    ),
    # an image is a still video of 4 frames (skvlm.models._blip1)
    "instructblipvideo": _BLIP,
    # the decoder puts the image's tokens before the text's itself, with no
    # image token in input_ids (skvlm.models._git); its blocks are post-norm
    "git": Traits(
        base="git",
        vision="git.image_encoder",
        vision_blocks="vision_model.encoder.layers",
        projector=("git.visual_projection",),
        language="git.encoder",
        language_blocks=("layer",),
        lm_head="output",
        class_token="first",
    ),
    # one T5 encoder over the prompt's words and the image's patches
    # (skvlm.models._udop); the tuner adapts the encoder and the decoder
    "udop": Traits(
        vision="patch_embed",
        language=("encoder", "decoder"),
        lm_head="lm_head",
        language_blocks=("block",),
        language_norm=("final_layer_norm",),
        unsupported={
            "projector": _UDOP_NO_PROJECTOR,
            "tuner:projector": _UDOP_NO_PROJECTOR,
        },
    ),
    # an image encoder with the projector inside it, and a decoder that
    # cross-attends to the projector's output (skvlm.models._formulanet)
    "pp_formulanet": Traits(
        vision="model.encoder",
        vision_blocks="layers",
        projector=("model.encoder.multi_modal_projector",),
        language="model.decoder",
        lm_head="lm_head",
        language_norm=("layer_norm",),
    ),
    # encoder-decoders whose encoder reads the image alone; the prompt is the
    # decoder's prefix (skvlm.models._decoder_prefix)
    "pix2struct": Traits(
        vision="encoder",
        vision_blocks="encoder.layer",
        projector=(),
        language="decoder",
        lm_head="decoder.lm_head",
        language_blocks=("layer",),
        language_norm=("final_layer_norm",),
        class_token="none",
        unsupported=dict.fromkeys(("projector", "tuner:projector"), _NO_CONNECTOR),
    ),
    # a checkpoint without enc_to_dec_proj refuses its projector (the adapter
    # says why); the decoder's blocks: TrOCR's and MBart's "layers", BERT's
    # "layer", GPT-2's "h"; its final norm, on the module holding them: MBart's
    # "layer_norm", GPT-2's "ln_f" (TrOCR's and BERT's decoders have none)
    "vision-encoder-decoder": Traits(
        vision="encoder",
        projector=("enc_to_dec_proj",),
        language="decoder",
        language_blocks=("layers", "layer", "h"),
        language_norm=("layer_norm", "ln_f"),
    ),
    # Donut's encoder: Swin's code under another type (read by Swin's adapter)
    "donut-swin": Traits(vision_blocks="encoder.layers"),
    # ViT-like backbones and video encoders (skvlm.models._backbones2); the
    # others' blocks and heads are derived. ViTDet's entries are maps, its
    # blocks one list; ImageGPT's last hidden state carries its final layernorm
    "vitdet": Traits(vision_blocks="encoder.layer"),
    "imagegpt": Traits(language_norm=("ln_f",)),
    # CLIPSeg's CLIP projects the pooled output as CLIP does
    "clipseg": Traits(projector=("visual_projection",)),
    # DETR-style detectors: the vision stage is the transformer encoder over
    # the backbone's flattened map (DETR_ENCODER: where its padding mask goes)
    **dict.fromkeys(
        (
            "detr",
            "conditional_detr",
            "dab-detr",
            "table-transformer",
            "deformable_detr",
        ),
        Traits(vision="", vision_blocks="encoder.layers"),
    ),
    # VideoPrism: a spatial encoder (per frame), then a temporal encoder (per
    # patch), read as one stack (skvlm.models._videoprism); its projector is
    # the video model's attention-pooled, normalized embedding
    "videoprism": Traits(
        vision="video_model.vision_model",
        vision_blocks=("spatial_layers", "temporal_layers"),
        projector=("video_model",),
    ),
    "videoprism_vision_model": Traits(
        vision="", vision_blocks=("spatial_layers", "temporal_layers")
    ),
}

#: Image-text-to-text types skvlm does not serve, and why: no image
#: placeholder in their prompts (the image sits elsewhere: cross-attention, a
#: prefix, an encoder of its own), or no image at all. Every column says so in
#: ``support_matrix()``, and loading one stops with the reason.
NOT_SERVED = {
    "evolla": "a protein-sequence model: it reads protein structures, not images",
    "mistral4": "transformers maps a text-only causal LM (Mistral4ForCausalLM) to "
    "image-text-to-text: it has no vision part",
    "pi0": "a robot-action model: a PaliGemma VLM inside a flow-matching action "
    "expert, answering with actions, not text",
    "pi05": "a robot-action model: a PaliGemma VLM inside a flow-matching action "
    "expert, answering with actions, not text",
}
TRAITS.update(
    {
        model_type: Traits(
            unsupported=dict.fromkeys(
                ("vision", "projector", "language", "generative", "tuner"), reason
            )
        )
        for model_type, reason in NOT_SERVED.items()
    }
)

#: Image-feature-extraction and zero-shot image types (transformers'
#: ``MODEL_FOR_IMAGE_MAPPING_NAMES``, ``..._ZERO_SHOT_IMAGE_CLASSIFICATION_...``)
#: skvlm does not serve, and why: ``support_matrix()`` says so, and loading one
#: stops with the reason.
VISION_NOT_SERVED = {
    "dinat": "transformers' DiNAT runs its neighborhood attention through the "
    "natten library's natten2dqkrpb / natten2dav functions, which natten's "
    "current release (0.21.7, a source distribution only) no longer has, so "
    "skvlm cannot run or test it. Use a hierarchical encoder skvlm serves "
    "instead (Swin, ConvNeXt, Hiera: skvlm.models.support_matrix() lists "
    "them)",
    "timm_backbone": "TimmBackbone.from_pretrained takes its argument for a timm "
    "model name and builds that model with timm's own pretrained weights (a "
    "saved directory's config and weights are ignored), so a timm_backbone "
    "checkpoint cannot be loaded from its files; it is the backbone inside "
    "detection models. Load a timm model as timm_wrapper (TimmWrapperModel), "
    "which skvlm serves",
}
#: Vision towers (by their config's ``model_type``) that pack the patches of all
#: images of a batch into one sequence and take ``image_sizes``: a model with
#: one has ``views="packed"`` whatever its family (Mistral 3, LLaVA with a
#: Pixtral tower, LightOnOCR), and skvlm splits the sequence per image by
#: ``image_sizes // patch_size``.
PACKED_TOWERS = ("pixtral",)

# Where transformers keeps each part, most common first.
_VISION_NAMES = (
    "model.vision_tower",
    "model.visual",
    "model.vision_model",
    "model.vision_encoder",
    "model.image_tower",
    "vision_tower",
    "vision_model",
)
_BLOCK_NAMES = (
    "vision_model.encoder.layers",
    "encoder.layers",
    "encoder.layer",
    "transformer.encoder.layers",
    "transformer.layers",
    "blocks",
    "layers",
    "encoder.blocks",
    "model.layers",
)
_PROJECTOR_NAMES = (
    "model.multi_modal_projector",
    "model.connector",
    "model.visual.merger",
    "model.visual.deepstack_merger_list",
    "model.aligner",
    "model.mm_projector",
    "model.image_newline",
    "model.projector",
    "model.embed_vision",
    "model.visual_embeddings_table",
    "multi_modal_projector",
)
_LANGUAGE_NAMES = ("model.language_model", "model.text_model", "language_model")
_BASE_NAME = "model"
_HEAD_NAMES = ("head", "pooler")


# The text config's count of residual streams (hyper-connections; Gemma 3n's
# AltUp).
_STREAM_KEYS = ("hc_mult", "hc_count", "altup_num_inputs")

# The language model's final norm (LFM2 calls it embedding_norm, NemotronH norm_f; Qwen4-Exp's
# last module is the mixer of its residual streams, normed inside).
_FINAL_NORM_NAMES = (
    "norm",
    "final_layernorm",
    "embedding_norm",
    "hyper_connection_mixer",
    "norm_f",  # NemotronH
)


def final_norm(language, names=None):
    """The final norm module of a language stack, or None.

    ``names``: where to look (``Traits.language_norm``), the first present
    taken; None: transformers' usual names.
    """
    return next(
        (
            getattr(language, name)
            for name in names or _FINAL_NORM_NAMES
            if getattr(language, name, None) is not None
        ),
        None,
    )


def decoder_stack(decoder, names):
    """(owner, blocks): the first module under ``decoder`` (itself included)
    that holds a non-empty list of blocks under one of ``names``; (None, None)
    if none does."""
    for _, module in decoder.named_modules():
        for name in names:
            blocks = getattr(module, name, None)
            if _is_block_list(blocks):
                return module, blocks
    return None, None


def language_layers(stack, traits):
    """The list of a language stack's blocks: its first list named in
    ``traits.language_blocks`` (``layers``; T5's ``block``), or None."""
    return next(
        (
            blocks
            for name in traits.language_blocks
            if (blocks := resolve_path(stack, name)) is not None
        ),
        None,
    )


# Where a ViT-style tower keeps its embeddings (CLIP-style towers nest the
# transformer in ``vision_model``), and the learned tokens before its patches.
_INNER_TOWER = "vision_model"
_EMBEDDINGS = "embeddings"
_CLASS_TOKEN_NAMES = ("class_embedding", "cls_token")
_EXTRA_PREFIX_NAMES = ("distillation_token",)  # DeiT


def tower_embeddings(tower):
    """The embeddings module of a ViT-style tower, or None."""
    inner = resolve_path(tower, _INNER_TOWER)
    return resolve_path(tower if inner is None else inner, _EMBEDDINGS)


def has_class_token(tower):
    """Whether a ViT-style tower's embeddings put a class token first."""
    embeddings = tower_embeddings(tower)
    return any(
        getattr(embeddings, name, None) is not None for name in _CLASS_TOKEN_NAMES
    )


def extra_prefix_tokens(tower):
    """How many learned tokens other than the class token and registers (DeiT's
    distillation token) a ViT-style tower puts before its patches."""
    embeddings = tower_embeddings(tower)
    return sum(hasattr(embeddings, name) for name in _EXTRA_PREFIX_NAMES)


# The sub-model to which a model's forward passes its keyword arguments on
# (BLIP-2 and InstructBLIP: their language model).
_KWARGS_TARGET = "language_model"


def kwargs_target(model):
    """The sub-model ``model``'s forward passes its keyword arguments to, or None."""
    return resolve_path(model, _KWARGS_TARGET)


#: Where a DETR-style detector keeps its transformer encoder, which is given
#: the padding mask of its flattened maps (skvlm.models._backbones2).
DETR_ENCODER = "encoder"

#: Where a timm-backed tower (``TimmWrapperModel``) keeps the timm model.
TIMM_MODEL = "timm_model"


def resolve_path(root, path):
    """The module or parameter at dotted ``path`` under ``root``, or None.

    One path: a tuple of block lists (``Traits.vision_blocks`` of a tower of
    several encoders) is resolved list by list, where each list's width is
    read too (:mod:`skvlm.models._chained`).
    """
    if path is None:
        return None
    if path == "":
        return root
    if not isinstance(path, str):
        raise TypeError(
            f"resolve_path takes one dotted path, not {path!r}: resolve each "
            "path of a tuple on its own."
        )
    node = root
    for name in path.split("."):
        node = getattr(node, name, None)
        if node is None:
            return None
    return node


def _first(root, names, check=lambda node: True):
    for name in names:
        node = resolve_path(root, name)
        if node is not None and check(node):
            return name
    return None


def _is_block_list(node):
    return isinstance(node, torch.nn.ModuleList) and len(node) > 0


def takes_patch_grid(model_cls):
    """Whether ``model_cls.get_image_features`` takes a per-image patch grid.

    A ``*grid_thw`` argument (frames, rows, columns per image) is how
    transformers' packed towers (Qwen-style: patches of every image in one
    sequence) are told the images apart, so such a model has
    ``views="packed"`` whatever its family.
    """
    method = getattr(model_cls, "get_image_features", None)
    if method is None:
        return False
    names = inspect.signature(method).parameters
    return any(name.endswith("grid_thw") for name in names)


def derive_traits(model, declared=None):
    """Fill the unset fields of ``declared`` from the model's structure.

    Parameters
    ----------
    model : torch.nn.Module
        The loaded HF model (``...ForConditionalGeneration`` or base model).
    declared : Traits, default=None
        What the family declares (:data:`TRAITS`).

    Returns
    -------
    traits : Traits
        With ``vision``, ``vision_blocks``, ``projector``, ``language`` and
        ``lm_head`` found under transformers' usual names (None where absent),
        ``base`` and ``vision_head`` likewise,
        and ``views="packed"`` for a tower of :data:`PACKED_TOWERS` or a model
        whose ``get_image_features`` takes a patch grid
        (:func:`takes_patch_grid`).
    """
    traits = declared or Traits()
    vision = traits.vision
    if vision is None:
        vision = _first(model, _VISION_NAMES)
    blocks = traits.vision_blocks
    if blocks is None and vision is not None:
        blocks = _first(resolve_path(model, vision), _BLOCK_NAMES, _is_block_list)
    projector = traits.projector
    if projector is None:
        projector = tuple(
            n for n in _PROJECTOR_NAMES if resolve_path(model, n) is not None
        )
        if "model.multi_modal_projector" in projector:
            projector = tuple(p for p in projector if p != "multi_modal_projector")
    language = traits.language or _first(
        model,
        _LANGUAGE_NAMES,
        lambda node: _is_block_list(getattr(node, "layers", None)),
    )
    lm_head = traits.lm_head or ("lm_head" if hasattr(model, "lm_head") else None)
    base = traits.base
    if base is None:
        base = _BASE_NAME if resolve_path(model, _BASE_NAME) is not None else ""
    vision_head = traits.vision_head
    if vision_head is None:
        tower = model if vision is None else resolve_path(model, vision)
        vision_head = _first(tower, _HEAD_NAMES)
    views = traits.views
    tower_type = getattr(
        getattr(model.config, "vision_config", None), "model_type", None
    )
    if views == "rows" and (
        tower_type in PACKED_TOWERS or takes_patch_grid(type(model))
    ):
        views = "packed"
    streams = traits.streams
    if streams is None:
        text = model.config.get_text_config()
        streams = next(
            (getattr(text, k) for k in _STREAM_KEYS if getattr(text, k, None)), 1
        )
    return replace(
        traits,
        streams=int(streams),
        views=views,
        vision=vision,
        vision_blocks=blocks,
        projector=projector,
        language=language,
        lm_head=lm_head,
        base=base,
        vision_head=vision_head,
    )


#: Image-text retrieval checkpoints, by architecture (their model type is the
#: captioner's): served as CLIP-style models (skvlm.models._itm). ``projector``
#: is (image projection, text projection, ...); ``language`` the text tower.
RETRIEVAL_TRAITS = {
    "BlipForImageTextRetrieval": Traits(
        vision="vision_model",
        vision_blocks="encoder.layers",
        projector=("vision_proj", "text_proj"),
        language="text_encoder",
    ),
    # the Q-Former reads the image through its queries and the text alone; its
    # query tokens and text embeddings follow the two projections
    "Blip2ForImageTextRetrieval": Traits(
        vision="vision_model",
        vision_blocks="encoder.layers",
        projector=(
            "vision_projection",
            "text_projection",
            "query_tokens",
            "embeddings",
        ),
        language="qformer",
    ),
}


def family_traits(model):
    """The traits of a loaded model: its type's :data:`TRAITS` entry, derived.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoModelForImageTextToText
    >>> from skvlm.models import family_traits
    >>> from skvlm.testing import make_tiny_llava
    >>> net = AutoModelForImageTextToText.from_pretrained(make_tiny_llava(tempfile.mkdtemp()))
    >>> traits = family_traits(net)
    >>> traits.vision, traits.vision_blocks, traits.projector, traits.language
    ('model.vision_tower', 'encoder.layers', ('model.multi_modal_projector',), 'model.language_model')
    """
    model_type = getattr(model.config, "model_type", None)
    return derive_traits(model, TRAITS.get(model_type))
