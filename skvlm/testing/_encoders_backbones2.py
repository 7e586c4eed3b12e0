"""Tiny random-init ViT-like backbones and video encoders (helper backbones2).

I-JEPA, ViT-MAE, ViT-MSN, ViTDet, Pixio, TIPSv2's vision tower, YOLOS,
ImageGPT, VideoMAE, TimeSformer and ViViT, CLIPSeg and TIPSv2: each the real architecture at toy sizes
with its family's PIL or NumPy image processor (no torchvision needed), saved in
Hugging Face layout for ``make_tiny_encoder``.
"""

from __future__ import annotations

from ._tokenizer import make_tokenizer
from ._tokenizer import with_ends as _with_ends
from ._vision import TEXT, VISION

IMAGE_SIZE = VISION["image_size"]
_NO_MLP = {k: v for k, v in VISION.items() if k != "intermediate_size"}


def _processor(name, **kwargs):
    import transformers

    return getattr(transformers, name)(**kwargs)


def _square(name="ViTImageProcessorPil"):
    return _processor(name, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _model(model_name, config_name, **config):
    import transformers

    cfg = getattr(transformers, config_name)(**config)
    return getattr(transformers, model_name)(cfg)


def _ijepa():
    return _model("IJepaModel", "IJepaConfig", **VISION), _square()


def _vit_mae():
    # saved with MAE's pre-training mask ratio, as the hub's checkpoints are:
    # the adapter reads every patch whatever the config says
    model = _model("ViTMAEModel", "ViTMAEConfig", **VISION, mask_ratio=0.75)
    return model, _square()


def _vit_msn():
    return _model("ViTMSNModel", "ViTMSNConfig", **VISION), _square()


def _vitdet():
    # block 1 attends within 2x2 windows, the others globally with relative
    # positions, as ViTDet's backbones alternate them
    model = _model(
        "VitDetModel",
        "VitDetConfig",
        **_NO_MLP,
        window_size=2,
        window_block_indices=[1],
        use_relative_position_embeddings=True,
    )
    return model, _square()


def _pixio():
    model = _model("PixioModel", "PixioConfig", **_NO_MLP, n_cls_tokens=4)
    processor = _processor(
        "BitImageProcessorPil",
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return model, processor


def _tipsv2_vision():
    # TIPSv2's own image processor needs torchvision; it resizes, rescales
    # and normalises as ViT's PIL one does
    model = _model("Tipsv2VisionModel", "Tipsv2VisionConfig", **_NO_MLP)
    return model, _square()


def _yolos():
    config = {**VISION, "image_size": [IMAGE_SIZE, IMAGE_SIZE]}
    model = _model("YolosModel", "YolosConfig", **config, num_detection_tokens=3)
    # images keep their aspect, so that a batch's differ in size and pad
    processor = _processor(
        "YolosImageProcessorPil", size={"shortest_edge": 32, "longest_edge": 64}
    )
    return model, processor


def _imagegpt():
    import numpy as np

    # 16 color clusters; 8x8 images: 64 pixel tokens
    clusters = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).round(4)
    model = _model(
        "ImageGPTModel",
        "ImageGPTConfig",
        vocab_size=len(clusters) + 1,
        n_positions=64,
        n_embd=32,
        n_layer=3,
        n_head=4,
    )
    processor = _processor(
        "ImageGPTImageProcessorPil",
        clusters=clusters.tolist(),
        size={"height": 8, "width": 8},
    )
    return model, processor


def _video(model_name, config_name, **extra):
    # two frames: the least a tubelet of two frames (VideoMAE) can read
    model = _model(model_name, config_name, **VISION, num_frames=2, **extra)
    processor = _processor(
        "VideoMAEImageProcessorPil",
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return model, processor


def _vivit():
    # transformers files ViViT's processor under its torchvision backend, yet
    # it is a NumPy one that runs without torchvision
    model = _model(
        "VivitModel",
        "VivitConfig",
        **{k: v for k, v in VISION.items() if k != "patch_size"},
        num_frames=2,
        tubelet_size=[2, VISION["patch_size"], VISION["patch_size"]],
    )
    processor = _processor(
        "VivitImageProcessor",
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return model, processor


# A ResNet backbone of two stages (transformers' own, not timm's)
_RESNET = dict(
    model_type="resnet",
    embedding_size=8,
    hidden_sizes=[8, 16],
    depths=[1, 1],
    layer_type="basic",
    out_features=["stage2"],
)


def _detector(model_name, config_name, width="d_model", **extra):
    # the family's own PIL processor (DAB-DETR's checkpoints use DETR's)
    name = {
        "ConditionalDetrModel": "ConditionalDetr",
        "DeformableDetrModel": "DeformableDetr",
    }
    processor_name = name.get(model_name, "Detr") + "ImageProcessorPil"
    config = {
        "use_timm_backbone": False,
        "backbone_config": _RESNET,
        width: 16,
        "encoder_layers": 3,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "num_queries": 5,
        **extra,
    }
    # images keep their aspect (shortest edge 32, longest 64), so that a
    # batch's images differ in size and DETR pads them
    processor = _processor(
        processor_name, size={"shortest_edge": 32, "longest_edge": 64}
    )
    return _model(model_name, config_name, **config), processor


def _text(tokenizer, **extra):
    return {
        **TEXT,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


def _clipseg():
    from transformers import CLIPSegConfig, CLIPSegModel, CLIPSegProcessor

    tokenizer = _with_ends(
        make_tokenizer(bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    )
    text = _text(
        tokenizer,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = CLIPSegConfig(vision_config=VISION, text_config=text, projection_dim=16)
    return CLIPSegModel(config), CLIPSegProcessor(_square(), tokenizer)


def _tipsv2():
    from transformers import Tipsv2Config, Tipsv2Model, Tipsv2Processor

    # TIPSv2's own image processor needs torchvision; ViT's PIL one resizes,
    # rescales and normalises the same way. Its text tower pools the masked
    # tokens, so the tokenizer's padding side does not matter.
    tokenizer = make_tokenizer(bos_token=None, eos_token="</s>")
    text = {**_text(tokenizer), "hidden_size": 32}
    config = Tipsv2Config(vision_config=_NO_MLP, text_config=text)
    return Tipsv2Model(config), Tipsv2Processor(_square(), tokenizer)


BUILDERS = {
    "ijepa": _ijepa,
    "vit_mae": _vit_mae,
    "vit_msn": _vit_msn,
    "vitdet": _vitdet,
    "pixio": _pixio,
    "tipsv2_vision_model": _tipsv2_vision,
    "yolos": _yolos,
    "imagegpt": _imagegpt,
    "videomae": lambda: _video("VideoMAEModel", "VideoMAEConfig", tubelet_size=2),
    "timesformer": lambda: _video("TimesformerModel", "TimesformerConfig"),
    "vivit": _vivit,
    "clipseg": _clipseg,
    "detr": lambda: _detector("DetrModel", "DetrConfig"),
    "conditional_detr": lambda: _detector(
        "ConditionalDetrModel", "ConditionalDetrConfig"
    ),
    # three backbone levels and a fourth made from the last (its GroupNorms
    # have 32 groups: 64 channels give a 1x1 map two values a group)
    "deformable_detr": lambda: _detector(
        "DeformableDetrModel",
        "DeformableDetrConfig",
        backbone_config={
            **_RESNET,
            "hidden_sizes": [8, 16, 24, 32],
            "depths": [1, 1, 1, 1],
            "out_features": ["stage2", "stage3", "stage4"],
        },
        d_model=64,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
    ),
    "dab-detr": lambda: _detector("DabDetrModel", "DabDetrConfig", "hidden_size"),
    "table-transformer": lambda: _detector(
        "TableTransformerModel", "TableTransformerConfig"
    ),
    "tipsv2": _tipsv2,
}
