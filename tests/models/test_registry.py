"""Loading through the adapter registry (``skvlm.models._registry``)."""

import pytest
import torch
from safetensors.torch import save_file

from skvlm.models import load_adapter

_TEXT = dict(
    model_type="llama",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=64,
)


@pytest.mark.parametrize(
    "model_type, vision",
    [
        (
            "perception_lm",
            dict(
                model_type="timm_wrapper", architecture="vit_pe_core_tiny_patch16_384"
            ),
        ),
        ("fast_vlm", None),  # its default: a timm FastViT
    ],
)
def test_a_timm_tower_without_timm_names_family_tower_and_fix(
    model_type, vision, tmp_path
):
    from transformers import CONFIG_MAPPING
    from transformers.utils import is_timm_available

    if is_timm_available():
        pytest.skip("this world has timm")
    kwargs = {"text_config": _TEXT} | ({"vision_config": vision} if vision else {})
    config = CONFIG_MAPPING[model_type](**kwargs)
    config.save_pretrained(tmp_path)
    save_file({"unused": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    architecture = config.vision_config.architecture
    with pytest.raises(
        ImportError,
        match=rf"^{model_type}: its vision tower is the timm model '{architecture}'"
        r".*pip install torchvision timm",
    ):
        load_adapter(tmp_path, device="cpu")
