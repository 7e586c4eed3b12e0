"""Tiny random-init convolutional and hierarchical backbones, saved in HF layout.

ResNet, RegNet, BiT, EfficientNet, MobileNet V1/V2, MobileViT (V1, V2),
LeViT, PVT, PoolFormer, FocalNet, SwiftFormer, SegFormer, GLPN and DPT, each
the real architecture at toy sizes with its family's PIL image processor; and
timm's models (``timm_wrapper``), which import only where torchvision is
installed. Served by :class:`skvlm.models.BackboneAdapter`
(DPT: by the ViT-like towers' adapter).
"""

from __future__ import annotations

from ._vision import _save, _seeded

SIZE = 32
_CROP = {"height": SIZE, "width": SIZE}
_STAGES = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1])
_SEGFORMER = dict(
    depths=[1, 1, 1, 1],
    sr_ratios=[8, 4, 2, 1],
    hidden_sizes=[8, 16, 24, 32],
    num_attention_heads=[1, 1, 2, 2],
    decoder_hidden_size=16,
)


def _processor(name, **kwargs):
    import transformers

    return getattr(transformers, name)(**kwargs)


def _cropping(name, size=SIZE):
    return _processor(
        name,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )


def _square(name, size=SIZE):
    return _processor(name, size={"height": size, "width": size})


#: model type -> (config kwargs, image processor factory)
_RECIPES = {
    "resnet": (
        dict(embedding_size=8, layer_type="basic", **_STAGES),
        lambda: _processor("ConvNextImageProcessorPil", size={"shortest_edge": SIZE}),
    ),
    "regnet": (
        dict(embedding_size=8, groups_width=8, **_STAGES),
        lambda: _processor("ConvNextImageProcessorPil", size={"shortest_edge": SIZE}),
    ),
    "bit": (
        dict(embedding_size=8, num_groups=2, **_STAGES),
        lambda: _cropping("BitImageProcessorPil"),
    ),
    # three blocks; the top 1x1 convolution widens to round(1280 * 0.025) = 32
    "efficientnet": (
        dict(
            image_size=SIZE,
            width_coefficient=0.025,
            depth_coefficient=1.0,
            in_channels=[320, 320, 640],
            out_channels=[320, 640, 960],
            kernel_sizes=[3, 3, 5],
            strides=[1, 2, 2],
            num_block_repeats=[1, 1, 1],
            expand_ratios=[1, 2, 2],
            hidden_dim=32,
        ),
        lambda: _square("EfficientNetImageProcessorPil"),
    ),
    "mobilenet_v1": (
        dict(image_size=SIZE, depth_multiplier=0.25, min_depth=4),
        lambda: _cropping("MobileNetV1ImageProcessorPil"),
    ),
    "mobilenet_v2": (
        dict(image_size=SIZE, depth_multiplier=0.25, min_depth=4),
        lambda: _cropping("MobileNetV2ImageProcessorPil"),
    ),
    "mobilevit": (
        dict(
            image_size=SIZE,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=2,
            patch_size=2,
        ),
        lambda: _cropping("MobileViTImageProcessorPil"),
    ),
    "mobilevitv2": (
        dict(image_size=64, width_multiplier=0.25),
        lambda: _cropping("MobileViTImageProcessorPil", 64),
    ),
    "levit": (
        dict(
            image_size=64,
            hidden_sizes=[16, 24, 32],
            num_attention_heads=[1, 2, 2],
            depths=[1, 1, 1],
            key_dim=[8, 8, 8],
            down_ops=[["Subsample", 8, 2, 4, 2, 2], ["Subsample", 8, 3, 4, 2, 2]],
        ),
        lambda: _cropping("LevitImageProcessorPil", 64),
    ),
    "pvt": (
        dict(
            image_size=SIZE,
            depths=[1, 1, 1, 1],
            sequence_reduction_ratios=[8, 4, 2, 1],
            hidden_sizes=[8, 16, 24, 32],
            patch_sizes=[4, 2, 2, 2],
            strides=[4, 2, 2, 2],
            num_attention_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2],
        ),
        lambda: _square("PvtImageProcessorPil"),
    ),
    "poolformer": (
        dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
        lambda: _cropping("PoolFormerImageProcessorPil"),
    ),
    "focalnet": (
        dict(image_size=SIZE, patch_size=2, embed_dim=8, depths=[1, 1, 2, 1]),
        lambda: _cropping("BitImageProcessorPil"),
    ),
    "swiftformer": (
        dict(image_size=SIZE, depths=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32]),
        lambda: _square("ViTImageProcessorPil"),
    ),
    "segformer": (_SEGFORMER, lambda: _square("SegformerImageProcessorPil")),
    # GLPN's and Swin2SR's processors keep each image's size (GLPN rounds it
    # down to a multiple of 32, Swin2SR pads it to a multiple of 8)
    "glpn": (_SEGFORMER, lambda: _processor("GLPNImageProcessorPil")),
    "swin2sr": (
        dict(
            image_size=SIZE,
            patch_size=1,
            embed_dim=8,
            depths=[1, 2],
            num_heads=[2, 2],
            window_size=4,
            upscale=2,
        ),
        lambda: _processor("Swin2SRImageProcessorPil", size_divisor=8),
    ),
    "dpt": (
        dict(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=SIZE,
            patch_size=8,
        ),
        lambda: _processor("DPTImageProcessorPil", size=_CROP, keep_aspect_ratio=False),
    ),
}
# Depth Pro: a DINOv2 image tower over the image downscaled to 32 x 32, beside
# a patch tower over 32 x 32 patches of the 64 x 64 input at two scales
_DINOV2 = {
    "model_type": "dinov2",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "image_size": SIZE,
    "patch_size": 8,
}
_DEPTH_PRO = dict(
    fusion_hidden_size=16,
    patch_size=SIZE,
    intermediate_hook_ids=[1, 0],
    intermediate_feature_dims=[8, 8],
    scaled_images_ratios=[0.5, 1.0],
    scaled_images_overlap_ratios=[0.0, 0.25],
    scaled_images_feature_dims=[16, 16],
    image_model_config=_DINOV2,
    patch_model_config=_DINOV2,
    fov_model_config=_DINOV2,
)
#: Types whose image processor transformers ships only with torchvision.
NEEDS_TORCHVISION = ("depth_pro", "timm_wrapper")
#: The timm models: a ResNet of timm's registry at its smallest, random init.
TIMM_ARCHITECTURE = "resnet10t"
BACKBONE_BUILDERS = (*sorted(_RECIPES), "depth_pro", "timm_wrapper")


def _timm_wrapper():
    import transformers

    # timm keeps its preprocessing in the model's config (``pretrained_cfg``),
    # where TimmWrapperImageProcessor reads it
    pretrained_cfg = {
        "input_size": (3, SIZE, SIZE),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "num_classes": 0,
    }
    config = transformers.TimmWrapperConfig(
        architecture=TIMM_ARCHITECTURE, num_classes=0, pretrained_cfg=pretrained_cfg
    )
    model = transformers.TimmWrapperModel(config)
    return model, transformers.TimmWrapperImageProcessor(pretrained_cfg=pretrained_cfg)


def make_tiny_backbone(path, model_type, *, seed=0):
    """Build a tiny random-init image backbone and save it.

    Parameters
    ----------
    path : str or Path
        Directory to write (``save_pretrained`` layout). Created if missing.
    model_type : str
        One of ``skvlm.testing.BACKBONE_BUILDERS`` (``"resnet"``, ``"mobilenet_v2"``,
        ``"segformer"``, ``"dpt"``...); ``"timm_wrapper"`` needs timm, and
        ``"depth_pro"`` its image processor, which need torchvision.
    seed : int, default=0
        Seed for the random weights, so two builds are identical.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> from skvlm.testing import make_tiny_backbone
    >>> path = make_tiny_backbone(tempfile.mkdtemp(), "resnet")
    >>> AutoModel.from_pretrained(path).config.hidden_sizes
    [8, 16, 24, 32]
    """
    from transformers import CONFIG_MAPPING, AutoModel

    if model_type not in BACKBONE_BUILDERS:
        raise ValueError(
            f"model_type={model_type!r} has no tiny backbone builder; choose one "
            f"of {list(BACKBONE_BUILDERS)}."
        )
    _seeded(seed)
    if model_type == "timm_wrapper":
        model, processor = _timm_wrapper()
    elif model_type == "depth_pro":
        model = AutoModel.from_config(CONFIG_MAPPING[model_type](**_DEPTH_PRO))
        processor = _square("DepthProImageProcessor", 2 * SIZE)
    else:
        kwargs, processor = _RECIPES[model_type]
        model = AutoModel.from_config(CONFIG_MAPPING[model_type](**kwargs))
        processor = processor()
    return _save(model.eval(), processor, path)
