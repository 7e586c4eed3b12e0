"""Tiny random-init vision encoders and CLIP-style models, saved in Hugging Face layout.

DINOv3 (ViT and ConvNeXt), ConvNeXt and ConvNeXt-V2, Swin and Swin-V2, Hiera,
MLCD, SigLIP2's NaFlex tower, AIMv2 (vision-only and CLIP-style), MetaCLIP 2, ALIGN, AltCLIP and Chinese-CLIP.
Each is the real architecture at toy sizes with its family's processor (the
PIL image processors, which need no torchvision) and, for the CLIP-style ones,
its family's tokenizer class built offline (XLM-R's Unigram, BERT's WordPiece).
"""

from __future__ import annotations

from functools import partial

from ._encoders_backbones2 import BUILDERS as BACKBONES2_BUILDERS
from ._encoders_videoprism import BUILDERS as VIDEOPRISM_BUILDERS
from ._families_claimed import CLAIMED_ENCODERS, make_tiny_vision_encoder
from ._tokenizer import BASE_WORDS, make_tokenizer, with_ends
from ._vision import TEXT, VISION, _save, _seeded

#: The model types whose every stage and pooling the test suite checks against
#: transformers' own outputs (``tests/models/test_encoders.py``), zero-shot
#: included for the CLIP-style ones.
TESTED_ENCODER_TYPES = (
    "aimv2",
    "aimv2_vision_model",
    "align",
    "altclip",
    "chinese_clip",
    "convnext",
    "convnextv2",
    "dinov3_convnext",
    "dinov3_vit",
    "hiera",
    "metaclip_2",
    "mlcd",
    "mlcd_vision_model",
    "siglip2_vision_model",
    "swin",
    "swinv2",
)

IMAGE_SIZE = 32
# Four stages, one with two blocks: every stage transition is present.
STAGES = dict(depths=[1, 1, 2, 1])
PUNCTUATION = tuple(".,?!:;\"'()-_/")


def _image_processor(name, **kwargs):
    import transformers

    return getattr(transformers, name)(**kwargs)


def _square(name):
    return _image_processor(name, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _clip_image_processor():
    return _image_processor(
        "CLIPImageProcessorPil",
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )


def bert_tokenizer():
    """A BERT WordPiece tokenizer over :data:`BASE_WORDS`, built offline."""
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [w for w in BASE_WORDS if w not in specials]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*specials, *words]))}
    return BertTokenizer(vocab=vocab)


def xlm_roberta_tokenizer():
    """An XLM-R Unigram tokenizer over :data:`BASE_WORDS`, built offline."""
    from transformers import XLMRobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    words = [w for w in BASE_WORDS if w not in PUNCTUATION]
    pieces = [(tok, 0.0) for tok in specials]
    pieces += [("\u2581" + w, -1.0) for w in dict.fromkeys(words)]
    pieces += [(p, -2.0) for p in PUNCTUATION]
    pieces += [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def _text_config(tokenizer, **extra):
    return {
        **TEXT,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


# -- vision-only encoders -------------------------------------------------------------
def _dinov3_vit():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    # DINOv3's own image processor needs torchvision; ViT's PIL one resizes,
    # rescales and normalises the same way.
    config = DINOv3ViTConfig(**VISION, num_register_tokens=2)
    return DINOv3ViTModel(config), _square("ViTImageProcessorPil")


def _dinov3_convnext():
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    config = DINOv3ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32], image_size=IMAGE_SIZE, **STAGES
    )
    return DINOv3ConvNextModel(config), _square("ViTImageProcessorPil")


def _convnext(version):
    import transformers

    name = "ConvNext" if version == 1 else "ConvNextV2"
    config = getattr(transformers, f"{name}Config")(
        hidden_sizes=[8, 16, 24, 32], image_size=IMAGE_SIZE, **STAGES
    )
    processor = _image_processor(
        "ConvNextImageProcessorPil", size={"shortest_edge": IMAGE_SIZE}
    )
    return getattr(transformers, f"{name}Model")(config), processor


def _swin(version):
    import transformers

    name = "Swin" if version == 1 else "Swinv2"
    config = getattr(transformers, f"{name}Config")(
        image_size=IMAGE_SIZE,
        patch_size=2,
        embed_dim=8,
        num_heads=[1, 2, 2, 4],
        window_size=2,
        **STAGES,
    )
    return getattr(transformers, f"{name}Model")(config), _square(
        "ViTImageProcessorPil"
    )


def _hiera():
    from transformers import HieraConfig, HieraModel

    config = HieraConfig(
        image_size=[IMAGE_SIZE, IMAGE_SIZE],
        patch_size=[3, 3],
        patch_stride=[2, 2],
        patch_padding=[1, 1],
        embed_dim=8,
        num_heads=[1, 2, 2, 4],
        masked_unit_size=[8, 8],
        query_stride=[2, 2],
        num_query_pool=2,
        **STAGES,
    )
    processor = _image_processor(
        "BitImageProcessorPil",
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return HieraModel(config), processor


def _mlcd():
    from transformers import MLCDVisionConfig, MLCDVisionModel

    return MLCDVisionModel(MLCDVisionConfig(**VISION)), _clip_image_processor()


def _siglip2_vision():
    """SigLIP2's NaFlex tower alone: each image resized to its own patch grid of
    at most 16 patches, padded to 16 and masked."""
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    vision = {k: v for k, v in VISION.items() if k != "image_size"}
    config = Siglip2VisionConfig(**vision, num_patches=16)
    processor = _image_processor(
        "Siglip2ImageProcessorPil", patch_size=config.patch_size, max_num_patches=16
    )
    return Siglip2VisionModel(config), processor


def _aimv2_vision():
    from transformers import Aimv2VisionConfig, Aimv2VisionModel

    config = Aimv2VisionConfig(**VISION, use_head=True)
    return Aimv2VisionModel(config), _clip_image_processor()


# -- CLIP-style models ----------------------------------------------------------------
def _aimv2():
    from transformers import Aimv2Config, Aimv2Model, CLIPProcessor

    # AIMv2 ships CLIP's tokenizer (BOS and EOS around each text; pooled at EOS)
    tokenizer = with_ends(
        make_tokenizer(bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    )
    config = Aimv2Config(
        vision_config={**VISION, "use_head": True},
        text_config=_text_config(
            tokenizer,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        projection_dim=16,
    )
    return Aimv2Model(config), CLIPProcessor(_clip_image_processor(), tokenizer)


def _metaclip_2():
    from transformers import CLIPProcessor, MetaClip2Config, MetaClip2Model

    tokenizer = xlm_roberta_tokenizer()
    config = MetaClip2Config(
        vision_config=VISION,
        text_config=_text_config(
            tokenizer,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        projection_dim=16,
    )
    return MetaClip2Model(config), CLIPProcessor(_clip_image_processor(), tokenizer)


def _altclip():
    from transformers import AltCLIPConfig, AltCLIPModel, AltCLIPProcessor

    tokenizer = xlm_roberta_tokenizer()
    text = _text_config(tokenizer, project_dim=16, type_vocab_size=1)
    text["max_position_embeddings"] += tokenizer.pad_token_id + 1  # RoBERTa offsets
    config = AltCLIPConfig(vision_config=VISION, text_config=text, projection_dim=16)
    return AltCLIPModel(config), AltCLIPProcessor(_clip_image_processor(), tokenizer)


def _chinese_clip():
    from transformers import (
        ChineseCLIPConfig,
        ChineseCLIPModel,
        ChineseCLIPProcessor,
    )

    tokenizer = bert_tokenizer()
    config = ChineseCLIPConfig(
        vision_config=VISION, text_config=_text_config(tokenizer), projection_dim=16
    )
    image_processor = _image_processor(
        "ChineseCLIPImageProcessorPil",
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return ChineseCLIPModel(config), ChineseCLIPProcessor(image_processor, tokenizer)


def _align():
    from transformers import AlignConfig, AlignModel, AlignProcessor

    tokenizer = bert_tokenizer()
    # Three EfficientNet blocks; the image embedding is the last block's pooled
    # channels, which the text projection must match.
    vision = dict(
        image_size=IMAGE_SIZE,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        in_channels=[32, 8, 16],
        out_channels=[8, 16, 24],
        kernel_sizes=[3, 3, 5],
        strides=[1, 2, 2],
        num_block_repeats=[1, 1, 1],
        expand_ratios=[1, 2, 2],
        hidden_dim=24,
    )
    config = AlignConfig(
        vision_config=vision, text_config=_text_config(tokenizer), projection_dim=24
    )
    image_processor = _image_processor(
        "EfficientNetImageProcessorPil",
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return AlignModel(config), AlignProcessor(image_processor, tokenizer)


_BUILDERS = {
    "aimv2": _aimv2,
    "aimv2_vision_model": _aimv2_vision,
    "align": _align,
    "altclip": _altclip,
    "chinese_clip": _chinese_clip,
    "convnext": lambda: _convnext(1),
    "convnextv2": lambda: _convnext(2),
    "dinov3_convnext": _dinov3_convnext,
    "dinov3_vit": _dinov3_vit,
    "hiera": _hiera,
    "metaclip_2": _metaclip_2,
    "mlcd": _mlcd,
    "mlcd_vision_model": _mlcd,
    "siglip2_vision_model": _siglip2_vision,
    "swin": lambda: _swin(1),
    "swinv2": lambda: _swin(2),
}
# The vision-only towers built from the common recipe (_families_claimed).
_BUILDERS.update(
    {t: partial(make_tiny_vision_encoder, t) for t in sorted(CLAIMED_ENCODERS)}
)
TESTED_ENCODER_TYPES += tuple(sorted(CLAIMED_ENCODERS))
# ViT-like backbones and still-video encoders
# (tests/models/test_backbones2.py)
_BUILDERS.update(BACKBONES2_BUILDERS)
# VideoPrism, its video processor needs torchvision
# (tests/models/test_videoprism.py)
_BUILDERS.update(VIDEOPRISM_BUILDERS)


def make_tiny_encoder(path, model_type, *, seed=0):
    """Build a tiny random-init vision encoder or CLIP-style model and save it.

    Parameters
    ----------
    path : str or Path
        Directory to write (``save_pretrained`` layout). Created if missing.
    model_type : str
        One of :data:`TESTED_ENCODER_TYPES`: ``"dinov3_vit"``,
        ``"dinov3_convnext"``, ``"convnext"``, ``"convnextv2"``, ``"swin"``,
        ``"swinv2"``, ``"hiera"``, ``"siglip2_vision_model"`` (NaFlex),
        ``"mlcd_vision_model"``, ``"mlcd"`` (the same
        model with the type DeepGlint's checkpoints write in their config),
        ``"aimv2_vision_model"`` (vision-only) or the
        CLIP-style ``"aimv2"``, ``"metaclip_2"``, ``"align"``, ``"altclip"``,
        ``"chinese_clip"``, or one of the ViT-like backbones, still-video
        encoders, detectors and CLIP-style models of
        ``tests/models/test_backbones2.py`` (``"ijepa"``, ``"vit_mae"``,
        ``"yolos"``, ``"videomae"``, ``"detr"``, ``"clipseg"``, ``"tipsv2"``...),
        or ``"videoprism"`` / ``"videoprism_vision_model"``
        (``tests/models/test_videoprism.py``; their video processor needs
        torchvision).
    seed : int, default=0
        Seed for the random weights, so two builds are identical.

    Returns
    -------
    path : Path
        The directory, ready for ``VLMEmbeddingTransformer(model=path)`` or
        ``AutoModel.from_pretrained(path)``.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> from skvlm.testing import make_tiny_encoder
    >>> path = make_tiny_encoder(tempfile.mkdtemp(), "convnext")
    >>> AutoModel.from_pretrained(path).config.hidden_sizes
    [8, 16, 24, 32]
    """
    if model_type not in _BUILDERS:
        raise ValueError(
            f"model_type={model_type!r} has no tiny builder; choose one of "
            f"{sorted(_BUILDERS)}."
        )
    _seeded(seed)
    model, processor = _BUILDERS[model_type]()
    path = _save(model.eval(), processor, path)
    if model_type == "mlcd":
        _rename_type(path, "mlcd")
    return path


def _rename_type(path, model_type):
    """Write ``model_type`` into the saved config, as some hub checkpoints have it."""
    import json

    config = path / "config.json"
    saved = json.loads(config.read_text())
    saved["model_type"] = model_type
    config.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
