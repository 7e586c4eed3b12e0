"""Tiny random-init contrastive and vision-only models, saved in Hugging Face layout."""

from __future__ import annotations

from pathlib import Path

from ._tokenizer import make_tokenizer, with_ends

# Sizes from ENV.md: a forward pass takes milliseconds, yet every architectural
# feature (CLS token, several layers, heads, projections) is present.
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
)


def _seeded(seed):
    import torch

    torch.manual_seed(seed)


def no_zero_weights(model, std=0.02):
    """Draw every all-zero weight of ``model`` (2-D and up) from N(0, std).

    transformers initialises some weights at zero (Gemma's projector matrix,
    class and register tokens, relative position tables, GRN gains): in a
    random-init test model they would make a stage's output, or every image's
    part of it, the same whatever the input, so a test could not tell a right
    vector from a wrong one. A trained checkpoint has none of them at zero.
    Draws from torch's global generator (the builders seed it).
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and param.is_floating_point() and not param.any():
                param.normal_(std=std)
    return model


def _save(model, processor, path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    no_zero_weights(model)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_clip(path, *, seed=0, vision=None, text=None, projection_dim=16):
    """Build a tiny random-init CLIP model with its processor and save it.

    Parameters
    ----------
    path : str or Path
        Directory to write (``save_pretrained`` layout). Created if missing.
    seed : int, default=0
        Seed for the random weights, so two builds are identical.
    vision, text : dict, default=None
        Overrides of the tiny vision and text config values.
    projection_dim : int, default=16
        Size of the joint image-text space.

    Returns
    -------
    path : Path
        The directory, ready for ``VLMEmbeddingTransformer(model=path)`` or
        ``CLIPModel.from_pretrained(path)``.

    Examples
    --------
    >>> import tempfile
    >>> from transformers import CLIPModel
    >>> from skvlm.testing import make_tiny_clip
    >>> path = make_tiny_clip(tempfile.mkdtemp())
    >>> CLIPModel.from_pretrained(path).config.vision_config.num_hidden_layers
    3
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    # CLIP's tokenizer puts BOS and EOS around each text; its text tower pools
    # at the EOS (without one, every text would pool its first token).
    tokenizer = with_ends(
        make_tokenizer(bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    )
    config = CLIPConfig(
        vision_config={**VISION, **(vision or {})},
        text_config={
            **TEXT,
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **(text or {}),
        },
        projection_dim=projection_dim,
    )
    _seeded(seed)
    model = CLIPModel(config).eval()
    size = config.vision_config.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return _save(model, CLIPProcessor(image_processor, tokenizer), path)


def make_tiny_siglip(path, *, seed=0, vision=None, text=None):
    """Build a tiny random-init SigLIP model with its processor and save it.

    Parameters
    ----------
    path : str or Path
        Directory to write (``save_pretrained`` layout).
    seed : int, default=0
        Seed for the random weights.
    vision, text : dict, default=None
        Overrides of the tiny config values.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> from skvlm.testing import make_tiny_siglip
    >>> AutoModel.from_pretrained(make_tiny_siglip(tempfile.mkdtemp())).config.model_type
    'siglip'
    """
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    tokenizer = make_tokenizer(bos_token=None, eos_token="</s>")
    config = SiglipConfig(
        vision_config={**VISION, **(vision or {})},
        text_config={
            **TEXT,
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            **(text or {}),
        },
    )
    _seeded(seed)
    model = SiglipModel(config).eval()
    size = config.vision_config.image_size
    image_processor = SiglipImageProcessor(size={"height": size, "width": size})
    return _save(model, SiglipProcessor(image_processor, tokenizer), path)


def siglip2_tokenizer():
    """SigLIP2's own tokenizer class (Gemma's BPE, lowercased) over the tiny words.

    Each word of the tiny vocabulary is one token, with Gemma's ``▁`` (space)
    in front when a space precedes it, built by merges that grow it letter by
    letter (those of ``▁`` words ranked first, so a word after a space always
    becomes its ``▁`` token). Unknown letters fall back to ``<unk>``.

    Examples
    --------
    >>> from skvlm.testing._vision import siglip2_tokenizer
    >>> siglip2_tokenizer().tokenize("A photo of a red car.")
    ['a', '▁photo', '▁of', '▁a', '▁red', '▁car', '.']
    """
    from transformers import Siglip2Tokenizer

    from ._tokenizer import BASE_WORDS

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for char in sorted({c for word in BASE_WORDS for c in word} | {"▁"}):
        vocab.setdefault(char, len(vocab))
    spaced, bare = [], []
    for word in BASE_WORDS:
        for token, merges in (("▁" + word, spaced), (word, bare)):
            for end in range(2, len(token) + 1):
                merge = (token[: end - 1], token[end - 1])
                if merge not in merges:
                    merges.append(merge)
                vocab.setdefault(token[:end], len(vocab))
    merges = sorted(spaced, key=lambda m: len(m[0])) + sorted(
        bare, key=lambda m: len(m[0])
    )
    return Siglip2Tokenizer(vocab=vocab, merges=merges)


def make_tiny_siglip2(path, *, seed=0, vision=None, text=None, max_num_patches=16):
    """Build a tiny random-init SigLIP2 (NaFlex) model with its processor and save it.

    SigLIP2 resizes each image to a variable patch grid of at most
    ``max_num_patches`` patches and pads the rest, so its token masks matter.

    Parameters
    ----------
    path : str or Path
        Directory to write.
    seed : int, default=0
        Seed for the random weights.
    vision, text : dict, default=None
        Overrides of the tiny config values.
    max_num_patches : int, default=16
        Patch budget of the image processor.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> from skvlm.testing import make_tiny_siglip2
    >>> AutoModel.from_pretrained(make_tiny_siglip2(tempfile.mkdtemp())).config.model_type
    'siglip2'
    """
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
        Siglip2Processor,
    )

    tokenizer = siglip2_tokenizer()
    vision_config = {**VISION, "num_patches": max_num_patches, **(vision or {})}
    vision_config.pop("image_size", None)
    config = Siglip2Config(
        vision_config=vision_config,
        text_config={
            **TEXT,
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            **(text or {}),
        },
    )
    _seeded(seed)
    model = Siglip2Model(config).eval()
    image_processor = Siglip2ImageProcessor(
        patch_size=config.vision_config.patch_size, max_num_patches=max_num_patches
    )
    return _save(model, Siglip2Processor(image_processor, tokenizer), path)


def make_tiny_vit(path, *, seed=0, kind="vit", vision=None):
    """Build a tiny random-init vision encoder (ViT or DINOv2) and save it.

    These families load with ``AutoModel`` and have no text side; skvlm serves
    them through its generic vision adapter.

    Parameters
    ----------
    path : str or Path
        Directory to write.
    seed : int, default=0
        Seed for the random weights.
    kind : {"vit", "dinov2"}, default="vit"
        The architecture.
    vision : dict, default=None
        Overrides of the tiny config values.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> from skvlm.testing import make_tiny_vit
    >>> AutoModel.from_pretrained(make_tiny_vit(tempfile.mkdtemp())).config.model_type
    'vit'
    """
    from transformers import (
        AutoModel,
        BitImageProcessor,
        Dinov2Config,
        ViTConfig,
        ViTImageProcessor,
    )

    cfg = {**VISION, **(vision or {})}
    size = cfg["image_size"]
    if kind == "vit":
        config = ViTConfig(**cfg)
        processor = ViTImageProcessor(size={"height": size, "width": size})
    elif kind == "dinov2":
        config = Dinov2Config(**cfg)
        processor = BitImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            do_convert_rgb=True,
        )
    else:
        raise ValueError(f"kind must be 'vit' or 'dinov2', got {kind!r}.")
    _seeded(seed)
    model = AutoModel.from_config(config).eval()
    return _save(model, processor, path)
