"""Tiny checkpoints of the families whose image processor needs torchvision.

transformers ships Llama 4's and Phi-4-multimodal's image processors only with
its torchvision backend (there is no ``*ImageProcessorPil`` for them). The
builders write the processor's files (``processor_config.json`` in the nested
layout ``save_pretrained`` writes, the tokenizer and the chat template) without
instantiating it, so they run with or without torchvision; loading the
processor then needs torchvision, as on a user's machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ._families import _named_tokenizer
from ._generative import _TEXT, _builder, _merge, _save
from ._vision import no_zero_weights

__all__ = ["make_tiny_llama4", "make_tiny_phi4_multimodal"]


def _write_processor(path, tokenizer, config, chat_template):
    """What ``processor.save_pretrained`` writes, from the processor's config."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    (path / "processor_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n"
    )
    if chat_template is not None:
        (path / "chat_template.jinja").write_text(chat_template)
    return path


class _Written:
    """A processor whose files are already written: nothing more to save."""

    def save_pretrained(self, path):
        return path


# Llama 4's chat template, reduced to its image/text part (no tools).
LLAMA4_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "{{ '<|image|>' }}{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{{ '<|eot|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\n\n' }}"
    "{% endif %}"
)
_LLAMA4_SPECIALS = {
    "image_token": "<|image|>",
    "patch_token": "<|patch|>",
    "boi_token": "<|image_start|>",
    "eoi_token": "<|image_end|>",
}


@_builder("llama4")
def make_tiny_llama4(path, *, seed=0, **overrides):
    """Tiny Llama 4: tiled tower (32 px tiles, up to 4, plus a global view when
    an image has several), pixel-shuffle adapter (4 tokens per tile), MoE LM
    (block 1 a mixture of 4 experts, block 2 a global attention layer without
    RoPE). Needs torchvision to load its image processor."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    tokenizer = _named_tokenizer(
        _LLAMA4_SPECIALS,
        [
            "<|tile_x_separator|>",
            "<|tile_y_separator|>",
            "<|header_start|>",
            "<|header_end|>",
            "<|eot|>",
            "user",
            "assistant",
        ],
        bos="<|begin_of_text|>",
        eos="<|eot|>",
        pad="<|finetune_right_pad|>",
        padding_side="left",
    )
    _write_processor(
        path,
        tokenizer,
        {
            "processor_class": "Llama4Processor",
            "patch_size": 8,
            "image_token": "<|image|>",
            "fake_image_token": "<|image|>",
            "image_processor": {
                "image_processor_type": "Llama4ImageProcessor",
                "size": {"height": 32, "width": 32},
                "max_patches": 4,
                "resize_to_max_canvas": False,
                "do_convert_rgb": True,
                "do_resize": True,
                "do_rescale": True,
                "do_normalize": True,
                "resample": 2,
                "rescale_factor": 1 / 255,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            },
        },
        LLAMA4_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    kwargs = _merge(
        dict(
            vision_config=dict(
                hidden_size=32,
                # the pixel-shuffled width (32 / 0.5**2) feeds the adapter MLP
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                vision_output_dim=32,
                projector_input_dim=32,
                projector_output_dim=32,
                pixel_shuffle_ratio=0.5,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            ),
            text_config=dict(
                _TEXT,
                intermediate_size_mlp=64,
                num_local_experts=4,
                num_experts_per_tok=1,
                interleave_moe_layer_step=2,
                no_rope_layer_interval=3,
                vocab_size=len(tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_index=ids("<|patch|>"),
            boi_token_index=ids("<|image_start|>"),
            eoi_token_index=ids("<|image_end|>"),
        ),
        overrides,
    )
    return _save(
        path,
        Llama4ForConditionalGeneration,
        Llama4Config(**kwargs),
        _Written(),
        seed,
    )


@_builder("phi4_multimodal")
def make_tiny_phi4_multimodal(path, *, seed=0, **overrides):
    """Tiny Phi-4-multimodal: SigLIP-style tower on 64 px crops of 2 px patches
    (the 32 x 32 patch grid its projector's token count assumes), a global view
    plus up to 4 crops per image, Phi-3-style LM; a one-block audio encoder.
    Needs torchvision to load its image processor."""
    from transformers import (
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
    )

    tokenizer = _named_tokenizer(
        {"image_token": "<|image|>", "audio_token": "<|audio|>"},
        ["<|user|>", "<|assistant|>", "<|end|>", "user", "assistant"],
        bos="<|endoftext|>",
        eos="<|end|>",
        pad="<|pad|>",
        padding_side="left",
    )
    audio = Phi4MultimodalFeatureExtractor().to_dict()
    audio.pop("processor_class", None)
    _write_processor(
        path,
        tokenizer,
        {
            "processor_class": "Phi4MultimodalProcessor",
            "audio_processor": audio,
            "image_processor": {
                "image_processor_type": "Phi4MultimodalImageProcessor",
                "size": {"height": 64, "width": 64},
                "patch_size": 2,
                "dynamic_hd": 4,
                "do_convert_rgb": True,
                "do_rescale": True,
                "do_normalize": True,
                "resample": 3,
                "rescale_factor": 1 / 255,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            },
        },
        None,  # the processor reads no chat template: the adapter writes the turns
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {k: v for k, v in _TEXT.items() if k != "head_dim"}
    kwargs = _merge(
        dict(
            text,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=64,
                patch_size=2,
                crop_size=64,
                image_token_id=ids("<|image|>"),
            ),
            audio_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_blocks=1,
                num_attention_heads=4,
                ext_pw_out_channel=32,
                depthwise_separable_out_channel=32,
                nemo_conv_channels=32,
                audio_token_id=ids("<|audio|>"),
            ),
        ),
        overrides,
    )
    path = Path(path)
    # Seeded init without reseeding the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phi4MultimodalForCausalLM(Phi4MultimodalConfig(**kwargs)).eval()
    # transformers initialises the tower's attention and MLP weights with unit
    # variance (SigLIP's scheme for wide layers), which makes the toy tower's
    # activations grow to hundreds; scale them to the text model's range.
    tower = model.model.embed_tokens_extend.image_embed.img_processor
    with torch.no_grad():
        for name, param in tower.encoder.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.mul_(0.02)
    no_zero_weights(model)
    model.save_pretrained(path)
    return path
