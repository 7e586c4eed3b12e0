"""Pix2Struct and vision-encoder-decoder: the prompt is the decoder's prefix.

The stages themselves run in the family matrix (``test_vlm_families.py``) and
the classifiers in ``test_family_classifiers.py``; here: what the prefix is,
what these families refuse and why, and generation over prompts of different
lengths, each against transformers' own outputs.
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.models import load_adapter
from skvlm.testing import make_tiny_vision_encoder_decoder, random_images
from skvlm.tuning import VLMClassificationTuner

FAMILIES = ["pix2struct", "vision-encoder-decoder"]
PROMPTS = ["a cat", "describe the object in this picture ."]


@pytest.fixture(scope="module")
def images():
    return random_images(2, seed=3, sizes=((32, 32), (24, 64)))


@pytest.mark.parametrize("name", FAMILIES)
def test_prefix_is_start_token_then_prompt(built, name, images):
    path = built.path(name)
    adapter = load_adapter(path, device="cpu")
    batch = adapter.prepare(images, PROMPTS)
    config = AutoModelForImageTextToText.from_pretrained(path).config
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    ids, mask = batch["decoder_input_ids"], batch["decoder_attention_mask"]
    for row, prompt in enumerate(PROMPTS):
        want = [config.decoder_start_token_id]
        want += tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert ids[row, : len(want)].tolist() == want
        assert mask[row].tolist() == [1] * len(want) + [0] * (ids.shape[1] - len(want))
    assert "input_ids" not in batch  # the encoder reads no text


@pytest.mark.parametrize("name", FAMILIES)
def test_ragged_prompts_generate_as_hf_does_row_by_row(built, name, images):
    path = built.path(name)
    clf = VLMGenerativeClassifier(
        path,
        class_names=["cat", "dog"],
        strategy="open_ended",
        max_new_tokens=3,
        batch_size=2,
        device="cpu",
    ).fit(images, [0, 1])
    answers = clf._generate(list(images), PROMPTS)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = processor.tokenizer
    want = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        if name == "pix2struct":
            pixels = processor(
                images=[image],
                return_tensors="pt",
                max_patches=processor.image_processor.max_patches,
            )
        else:
            pixels = processor.image_processor(images=[image], return_tensors="pt")
        # transformers' generate puts the start token before the prompt itself
        prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **pixels,
                decoder_input_ids=prompt_ids["input_ids"],
                do_sample=False,
                max_new_tokens=3,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[0, 1 + prompt_ids["input_ids"].shape[1] :]
        want.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert answers == want


@pytest.mark.parametrize("name", FAMILIES)
def test_text_prior_is_refused_with_the_reason(built, name, images):
    clf = VLMGenerativeClassifier(
        built.path(name),
        class_names=["cat", "dog"],
        calibration="text_prior",
        device="cpu",
    )
    with pytest.raises(ValueError, match="encoder reads the image alone"):
        clf.fit(images, [0, 1])


def test_pix2struct_refuses_a_projector(built, images):
    vlm = VLMEmbeddingTransformer(
        built.path("pix2struct"), stage="projector", device="cpu"
    )
    with pytest.raises(
        ValueError,
        match=r"stage='projector' is not available for the pix2struct model.*"
        r"nothing stands between its encoder and its decoder",
    ):
        vlm.fit(images)


@pytest.fixture(scope="module")
def same_width(tmp_path_factory):
    """A vision-encoder-decoder whose encoder has the decoder's width: no
    enc_to_dec_proj (as trocr-base: the decoder's cross_attention_hidden_size)."""
    path = tmp_path_factory.mktemp("ved_same_width")
    return make_tiny_vision_encoder_decoder(path, encoder_config={"hidden_size": 48})


def test_without_enc_to_dec_proj_the_projector_is_refused(same_width, images, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(same_width)
    assert not hasattr(model, "enc_to_dec_proj")  # transformers made none
    vlm = VLMEmbeddingTransformer(same_width, stage="projector", device="cpu")
    with pytest.raises(ValueError, match=r"vision-encoder-decoder.*no enc_to_dec_proj"):
        vlm.fit(images)
    tuner = VLMClassificationTuner(
        same_width,
        train="projector",
        class_names=["cat", "dog"],
        output_dir=tmp_path / "projector",
        device="cpu",
    )
    with pytest.raises(ValueError, match="no enc_to_dec_proj"):
        tuner.fit(images, ["cat", "dog"])
    # the language stage still equals HF's decoder states
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    got = VLMEmbeddingTransformer(
        same_width, stage="language", pooling="last", device="cpu"
    ).fit_transform(X)
    processor = AutoProcessor.from_pretrained(same_width)
    want = []
    for image, prompt in zip(images, PROMPTS, strict=True):
        pixels = processor.image_processor(images=[image], return_tensors="pt")
        ids = [model.config.decoder_start_token_id]
        ids += processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.eval()(
                **pixels,
                decoder_input_ids=torch.tensor([ids]),
                output_hidden_states=True,
            )
        want.append(out.decoder_hidden_states[-1][0, -1].numpy())
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)


def _a_font():
    """A TrueType font file of this machine (DejaVu Sans), or None."""
    candidates = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path(), "fonts/ttf/DejaVuSans.ttf"))
    except ImportError:
        pass
    return next((p for p in candidates if p.exists()), None)


@pytest.fixture
def font_cache(tmp_path, monkeypatch):
    """transformers' Pix2Struct font (the Hub's ``ybelkada/fonts``), served from
    a Hub cache holding a local TrueType font, offline."""
    import huggingface_hub.constants

    font = _a_font()
    if font is None:
        pytest.skip("no TrueType font on this machine")
    repo = tmp_path / "hub" / "models--ybelkada--fonts"
    revision = "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    shutil.copy(font, repo / "snapshots" / revision / "Arial.TTF")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub")
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_pix2struct_vqa_reads_the_prompt_in_the_image(font_cache, tmp_path, images):
    # A VQA checkpoint's processor renders the prompt onto the image: the
    # vision stage reads it, and the decoder's prefix is its start token alone.
    from skvlm.testing import make_tiny_pix2struct

    path = make_tiny_pix2struct(tmp_path / "vqa", vqa=True)
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    vision = VLMEmbeddingTransformer(
        path, stage="vision", pooling="mean", device="cpu"
    ).fit_transform(X)
    language = VLMEmbeddingTransformer(
        path, stage="language", pooling="last", device="cpu"
    ).fit_transform(X)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    want_vision, want_language = [], []
    for image, prompt in zip(images, PROMPTS, strict=True):
        inputs = processor(
            images=[image],
            text=[prompt],
            return_tensors="pt",
            max_patches=processor.image_processor.max_patches,
        )
        assert "decoder_input_ids" not in inputs  # the header is in the image
        with torch.no_grad():
            out = model(
                **inputs,
                decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id]]),
                output_hidden_states=True,
            )
        real = inputs["attention_mask"][0].bool()
        want_vision.append(out.encoder_hidden_states[-1][0][real].mean(0).numpy())
        want_language.append(out.decoder_hidden_states[-1][0, -1].numpy())
    np.testing.assert_allclose(vision, np.stack(want_vision), atol=1e-5)
    np.testing.assert_allclose(language, np.stack(want_language), atol=1e-5)
    # the prompt changes what the encoder sees
    other = VLMEmbeddingTransformer(
        path, stage="vision", pooling="mean", prompt="is it a dog ?", device="cpu"
    ).fit_transform(images)
    assert not np.allclose(other, vision, atol=1e-3)


@pytest.mark.parametrize(
    "decoder, encoder", [("gpt2", "vit"), ("bert", "vit"), ("mbart", "donut-swin")]
)
def test_other_decoders_and_encoders(decoder, encoder, images, tmp_path):
    # GPT-2 (a final ln_f, Conv1D linear layers), a causal BERT (no final
    # norm) and Donut's MBart (a final layer_norm) behind a ViT or Donut's
    # Swin (read as Swin): both stages equal HF's states; LoRA's default
    # targets (every linear layer of the decoder's blocks) train GPT-2's Conv1D
    path = make_tiny_vision_encoder_decoder(
        tmp_path / decoder, decoder=decoder, encoder=encoder
    )
    X = pd.DataFrame({"image": images, "prompt": PROMPTS})
    layers = [0, 1, -1]
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    want = {"vision": [], "language": []}
    for image, prompt in zip(images, PROMPTS, strict=True):
        ids = [model.config.decoder_start_token_id]
        ids += processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(
                **processor.image_processor(images=[image], return_tensors="pt"),
                decoder_input_ids=torch.tensor([ids]),
                output_hidden_states=True,
            )
        for stage, states in (
            ("vision", out.encoder_hidden_states),
            ("language", out.decoder_hidden_states),
        ):
            # a ViT's class token is left out of mean
            start = 1 if stage == "vision" and encoder == "vit" else 0
            want[stage].append(
                np.concatenate([states[k][0][start:].mean(0).numpy() for k in layers])
            )
    for stage in ("vision", "language"):
        got = VLMEmbeddingTransformer(
            path, stage=stage, layer=layers, pooling="mean", device="cpu"
        ).fit_transform(X)
        np.testing.assert_allclose(got, np.stack(want[stage]), atol=1e-5)
    if decoder != "gpt2":
        return  # their blocks' nn.Linear layers: as TrOCR's, which the family tests train
    tuner = VLMClassificationTuner(
        path,
        train="lora",
        class_names=["cat", "dog"],
        batch_size=2,
        max_iter=2,  # the first step is the warmup's, at lr 0
        output_dir=tmp_path / "lora",
        random_state=0,
        device="cpu",
    ).fit(images, ["cat", "dog"])
    tuned = AutoModelForImageTextToText.from_pretrained(tuner.model_path_)
    before = model.state_dict()
    changed = {
        k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])
    }
    # LoRA merged into the decoder's blocks; the projector, where there is
    # one, trains beside it
    assert any(k.startswith("decoder.") for k in changed)
    assert {k.split(".")[0] for k in changed} <= {"decoder", "enc_to_dec_proj"}


def _with_encoder(path, encoder_config):
    """The tiny vision-encoder-decoder at ``path`` rebuilt around another encoder."""
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    config = AutoModelForImageTextToText.from_pretrained(path).config
    joint = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        encoder_config, config.decoder
    )
    joint.decoder_start_token_id = config.decoder_start_token_id
    joint.pad_token_id = config.pad_token_id
    VisionEncoderDecoderModel(joint).save_pretrained(path)
    return config


def test_the_encoder_is_read_by_its_own_types_adapter(tmp_path, images):
    from transformers import ViTMSNConfig

    path = make_tiny_vision_encoder_decoder(tmp_path / "msn")
    config = AutoModelForImageTextToText.from_pretrained(path).config
    _with_encoder(path, ViTMSNConfig(**{**config.encoder.to_dict()}))
    adapter = load_adapter(path, device="cpu")
    assert adapter.stages == ("vision", "projector", "language")
    got = VLMEmbeddingTransformer(
        path, stage="vision", layer=1, pooling="cls", device="cpu"
    ).fit_transform(images)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    pixels = AutoProcessor.from_pretrained(path).image_processor(
        images=list(images), return_tensors="pt"
    )
    with torch.no_grad():
        states = model.encoder(**pixels, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(got, states[1][:, 0].numpy(), atol=1e-5, rtol=1e-5)


def test_an_encoder_without_adapter_refuses_the_vision_stage(tmp_path, images):
    # a vision type transformers does not ship (registered through its public
    # Auto API, as a new family would be): skvlm has no adapter for it
    from transformers import AutoConfig, AutoModel, ViTConfig, ViTModel

    class NovelConfig(ViTConfig):
        model_type = "skvlm_novel_encoder"

    class NovelModel(ViTModel):
        config_class = NovelConfig

    AutoConfig.register("skvlm_novel_encoder", NovelConfig, exist_ok=True)
    AutoModel.register(NovelConfig, NovelModel, exist_ok=True)
    path = make_tiny_vision_encoder_decoder(tmp_path / "novel")
    config = AutoModelForImageTextToText.from_pretrained(path).config
    _with_encoder(path, NovelConfig(**config.encoder.to_dict()))
    adapter = load_adapter(path, device="cpu")
    assert adapter.stages == ("projector", "language")
    vlm = VLMEmbeddingTransformer(path, stage="vision", device="cpu")
    with pytest.raises(
        ValueError, match=r"no vision adapter for its encoder \('skvlm_novel_encoder'"
    ):
        vlm.fit(images)
