"""A tiny Gemma 3n: what the common recipe (``_families_claimed``) cannot express.

Gemma 3n's vocabulary ends with a vision block and an audio block
(``vocab_offset``) whose ids the model reads as image and audio tokens, so the
tokenizer's image and audio tokens must sit there. Its tower is a timm model
(timm imports only with torchvision), so the checkpoint builds only where
torchvision is. The tower is a toy timm ResNet, not Gemma 3n's MobileNetV5:
a shallow MobileNetV5 needs custom ``block_args`` in the config, which timm's
builder fills with layer classes when the model is built, so the config no
longer serialises; at a toy width its own 84 blocks take seconds per batch.
"""

from __future__ import annotations

from ._families import GEMMA3_TEMPLATE
from ._generative import _merge, _save, _tokenizer

__all__ = ["make_tiny_gemma3n"]


def _gemma3n_tokenizer():
    """The offline tokenizer, the vision then the audio block at its end."""
    from transformers import PreTrainedTokenizerFast

    base = _tokenizer(
        ["<start_of_image>", "<start_of_audio>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        padding_side="left",
    )
    text_vocab = len(base)
    tail = ["<end_of_image>", "<image_soft_token>", "<end_of_audio>"]
    base.add_tokens([*tail, "<audio_soft_token>"], special_tokens=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        bos_token=base.bos_token,
        eos_token=base.eos_token,
        pad_token=base.pad_token,
        unk_token=base.unk_token,
        padding_side=base.padding_side,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
            "boa_token": "<start_of_audio>",
            "eoa_token": "<end_of_audio>",
            "audio_token": "<audio_soft_token>",
        },
    )
    return tokenizer, text_vocab


def make_tiny_gemma3n(path, *, seed=0, **overrides):
    """Tiny Gemma 3n: a toy timm ResNet tower (a 2 x 2 map, 4 image tokens per
    64 px image) in place of MobileNetV5, Gemma 3n's LM (AltUp, LAuReL,
    per-layer inputs, the last two of four layers reading the cache of
    earlier ones), a one-block audio encoder. Needs timm, which needs
    torchvision.

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int, default=0
        Seed of the random init: the same seed gives the same weights.
    **overrides
        Keyword arguments of ``Gemma3nConfig``, replacing the tiny defaults;
        sub-config dicts merge key by key.

    Returns
    -------
    path : Path
        The directory, holding config, weights, processor and tokenizer.

    Raises
    ------
    ImportError
        Where timm does not import (it needs torchvision).

    Examples
    --------
    >>> from skvlm.testing import TINY_MODELS
    >>> TINY_MODELS["gemma3n"].torchvision  # built and tested beside torchvision
    True
    """
    from transformers import (
        Gemma3nAudioFeatureExtractor,
        Gemma3nConfig,
        Gemma3nForConditionalGeneration,
        Gemma3nProcessor,
        SiglipImageProcessorPil,
    )
    from transformers.utils import is_timm_available

    if not is_timm_available():
        raise ImportError(
            "gemma3n: its vision tower is a timm model, and timm is not "
            "importable here (it needs torchvision): pip install torchvision timm."
        )
    tokenizer, text_vocab = _gemma3n_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    processor = Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=SiglipImageProcessorPil(size={"height": 64, "width": 64}),
        tokenizer=tokenizer,
        image_seq_length=4,
        audio_seq_length=4,
        # its processor expands the image token (Gemma 3's expands the start)
        chat_template=GEMMA3_TEMPLATE.replace("<start_of_image>", "<image_soft_token>"),
    )
    kwargs = _merge(
        dict(
            text_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=512,
                vocab_size=text_vocab + 4,
                vocab_size_per_layer_input=text_vocab,
                hidden_size_per_layer_input=8,
                laurel_rank=4,
                altup_num_inputs=2,
                num_kv_shared_layers=2,
                layer_types=["sliding_attention", "full_attention"] * 2,
                sliding_window=16,
                activation_sparsity_pattern=[0.0] * 4,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            vision_config=dict(
                architecture="resnet18",
                hidden_size=32,
                vocab_size=2,
                vocab_offset=text_vocab,
                model_args=dict(
                    layers=[1, 1, 1, 1], channels=[8, 16, 32, 32], stem_width=8
                ),
            ),
            audio_config=dict(
                vocab_size=2,
                vocab_offset=text_vocab + 2,
                hidden_size=32,
                conf_num_attention_heads=4,
                conf_num_hidden_layers=1,
                sscp_conv_channel_size=[8, 8],
            ),
            vision_soft_tokens_per_image=4,
            audio_soft_tokens_per_image=4,
            boi_token_id=ids("<start_of_image>"),
            eoi_token_id=ids("<end_of_image>"),
            image_token_id=ids("<image_soft_token>"),
            boa_token_id=ids("<start_of_audio>"),
            eoa_token_id=ids("<end_of_audio>"),
            audio_token_id=ids("<audio_soft_token>"),
        ),
        overrides,
    )
    return _save(
        path,
        Gemma3nForConditionalGeneration,
        Gemma3nConfig(**kwargs),
        processor,
        seed,
    )
