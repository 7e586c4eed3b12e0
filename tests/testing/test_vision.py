"""The tiny CLIP-style builders: their text towers tell class names apart.

CLIP's text tower pools at the EOS token; a tiny tokenizer that adds none makes
it pool the first token, the same for every text, and zero-shot logits equal
for every class (a zero-shot test could then not fail).
"""

import pytest
import torch
from transformers import AutoModel, AutoProcessor

from skvlm.testing._registry import TINY_MODELS

CLIP_STYLE = sorted(
    t for t, m in TINY_MODELS.items() if m.kind == "clip" and not m.torchvision
)
NAMES = ["cat", "dog", "red car"]


def test_the_clip_style_builders_are_found():
    assert {"clip", "siglip", "metaclip_2", "altclip", "chinese_clip"} <= set(
        CLIP_STYLE
    )


@pytest.mark.parametrize("model_type", CLIP_STYLE)
def test_each_class_name_has_its_own_text_embedding(model_type, tmp_path):
    path = TINY_MODELS[model_type].build(tmp_path)
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    tokens = tokenizer(
        [f"a photo of a {name}." for name in NAMES], padding=True, return_tensors="pt"
    )
    tokens.pop("token_type_ids", None)
    with torch.no_grad():
        out = model.get_text_features(**tokens)
    emb = getattr(out, "pooler_output", out)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    gaps = torch.cdist(emb, emb) + torch.eye(len(NAMES))
    assert gaps.min() > 1e-4, f"{model_type}: two class names share a text embedding"


def test_tiny_clip_puts_bos_and_eos_around_each_text(clip_path):
    tokenizer = AutoProcessor.from_pretrained(clip_path).tokenizer
    ids = tokenizer("a cat")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
