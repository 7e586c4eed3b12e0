"""Train the two tiny vision-language models shipped inside skvlm.

    python scripts/train_embedded_models.py            # writes skvlm/_data/models/

Both models learn from ``skvlm.datasets.load_digit_images`` (scikit-learn's 8x8
digits drawn as 32 px RGB images), nothing else, and are saved with
``save_pretrained`` so that ``from_pretrained`` and skvlm load them by name:

- ``tiny-clip``: ``CLIPModel`` + ``CLIPProcessor`` trained contrastively on
  image / caption pairs ("a photo of the digit three", ...);
- ``tiny-llava``: ``LlavaForConditionalGeneration`` (CLIP tower, MLP projector,
  Llama LM) + ``LlavaProcessor`` with the LLaVA-1.5 chat template, trained to
  answer "What type of object is in this photo?" with "The photo features a
  three." Its vision tower is tiny-clip's, frozen, as in LLaVA's first stage.

Split: ``train_test_split(range(1797), test_size=0.25, stratify=target,
random_state=0)``: 1347 training and 450 test images. Training sees only the
training images (clean, plus ``N_AUGMENTED`` copies rendered with
``variation=0.5``); every figure in the final table is measured on the clean
test images. Deterministic: fixed seeds, ``torch.use_deterministic_algorithms``
and a fixed thread count (1 by default; another count may change the last bits).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tokenizers import processors

from skvlm.datasets import DIGIT_NAMES, load_digit_images
from skvlm.testing import make_tokenizer
from skvlm.testing._generative import LLAVA_TEMPLATE

SEED = 0
SIZE = 32
N_AUGMENTED = 6  # augmented renderings of each training image (variation below)
VARIATION = 0.5
TEST_SIZE = 0.25
PROMPT = "What type of object is in this photo?"
ANSWER = "The photo features a {}."  # the paper's answer prefix + class name
ZERO_SHOT_TEMPLATE = "a photo of the digit {}."
# Caption templates of the contrastive training; the zero-shot one is among them.
CAPTIONS = (
    "a photo of the digit {}.",
    "a photo of the digit {}",
    "a photo of the number {}.",
    "a picture of the digit {}.",
    "an image of the number {}.",
    "a photo of a {}.",
    "the digit {}",
    "{}",
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=SIZE,
    patch_size=8,
)
CLIP_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=32,
)
LM = dict(
    model_type="llama",
    hidden_size=96,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=24,
    max_position_embeddings=128,
)
EXTRA_WORDS = ("The", "USER", "ASSISTANT", "What", "photo", "features", "digit")


# -- data ----------------------------------------------------------------------
def load_data():
    """Clean images, labels, the split, and augmented training renderings."""
    clean = load_digit_images(size=SIZE)
    y = clean.target
    train, test = train_test_split(
        np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=SEED
    )
    aug_images, aug_y = [clean.images[i] for i in train], [y[train]]
    for copy in range(N_AUGMENTED):
        noisy = load_digit_images(
            size=SIZE, variation=VARIATION, random_state=SEED + 1 + copy
        )
        aug_images += [noisy.images[i] for i in train]
        aug_y.append(y[train])
    return clean.images, y, train, test, aug_images, np.concatenate(aug_y)


def pixels(images):
    """CLIP preprocessing of 32 px RGB images (the processor's, checked in main)."""
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    arr = (arr - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
    return torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())


def add_bos_eos(tokenizer, single):
    """Make the fast tokenizer frame every text as ``single`` (e.g. "<s> $A")."""
    specials = [
        t for t in (tokenizer.bos_token, tokenizer.eos_token) if t and t in single
    ]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single,
        special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in specials],
    )
    return tokenizer


def image_processor():
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )


def schedule(optimizer, total, warmup):
    """Linear warm-up then cosine decay to 0."""

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(n, batch_size, generator):
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def probe_accuracy(features, y, train, test):
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(features[train], y[train])
    return float(probe.score(features[test], y[test]))


# -- tiny-clip -----------------------------------------------------------------
def build_clip():
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = make_tokenizer(
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        extra_words=EXTRA_WORDS,
        model_max_length=CLIP_TEXT["max_position_embeddings"],
    )
    # CLIP pools the text at the end-of-text token, so every text must end with it.
    add_bos_eos(tokenizer, "<|startoftext|> $A <|endoftext|>")
    config = CLIPConfig(
        vision_config=VISION,
        text_config=dict(
            CLIP_TEXT,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        projection_dim=64,
    )
    torch.manual_seed(SEED)
    return CLIPModel(config), CLIPProcessor(image_processor(), tokenizer)


def train_clip(model, processor, pix, y, *, epochs, batch_size=128, lr=2e-3, log=print):
    """Contrastive training on image / caption pairs.

    Each image is paired with a caption of its class in a random template. Images
    of the same class in a batch share the class, so every caption of that class
    counts as a positive (soft targets spread over them), not as a negative.
    """
    tokenizer = processor.tokenizer
    texts = [[t.format(name) for t in CAPTIONS] for name in DIGIT_NAMES]
    flat = [t for row in texts for t in row]
    enc = tokenizer(flat, padding=True, return_tensors="pt")
    ids = enc["input_ids"].view(10, len(CAPTIONS), -1)
    mask = enc["attention_mask"].view(10, len(CAPTIONS), -1)
    y = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(SEED)
    steps = epochs * math.ceil(len(y) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = schedule(opt, steps, warmup=steps // 20)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in batches(len(y), batch_size, gen):
            labels = y[idx]
            template = torch.randint(len(CAPTIONS), (len(idx),), generator=gen)
            image = F.normalize(
                model.get_image_features(pixel_values=pix[idx]).pooler_output, dim=-1
            )
            text = F.normalize(
                model.get_text_features(
                    input_ids=ids[labels, template],
                    attention_mask=mask[labels, template],
                ).pooler_output,
                dim=-1,
            )
            logits = model.logit_scale.exp() * image @ text.T
            same = (labels[:, None] == labels[None, :]).float()
            targets = same / same.sum(1, keepdim=True)
            loss = 0.5 * (
                F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            total += loss.item() * len(idx)
        log(f"  clip epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f}")
    return model.eval()


@torch.inference_mode()
def evaluate_clip(model, processor, images, y, train, test):
    """Zero-shot accuracy with ZERO_SHOT_TEMPLATE and a linear probe, on the test split."""
    inputs = processor(images=list(images), return_tensors="pt")
    image = model.get_image_features(**inputs).pooler_output
    text = processor(
        text=[ZERO_SHOT_TEMPLATE.format(n) for n in DIGIT_NAMES],
        padding=True,
        return_tensors="pt",
    )
    text = model.get_text_features(**text).pooler_output
    pred = (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T).argmax(1).numpy()
    return {
        "clip zero-shot (test)": float((pred[test] == y[test]).mean()),
        "clip zero-shot (train)": float((pred[train] == y[train]).mean()),
        "clip linear probe, image embedding (test)": probe_accuracy(
            image.numpy(), y, train, test
        ),
    }


# -- tiny-llava ----------------------------------------------------------------
def build_llava(clip):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = make_tokenizer(
        ["<image>"],
        extra_words=EXTRA_WORDS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )
    add_bos_eos(tokenizer, "<s> $A")  # Llama prepends BOS, never appends EOS
    processor = LlavaProcessor(
        image_processor=image_processor(),
        tokenizer=tokenizer,
        patch_size=VISION["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    # The tower's own projection size (unused by the tower, recorded for clarity).
    vision = dict(
        clip.config.vision_config.to_dict(), projection_dim=clip.config.projection_dim
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=dict(
            LM,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-2,
        image_seq_length=(SIZE // VISION["patch_size"]) ** 2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED + 1)
    model = LlavaForConditionalGeneration(config)
    # LLaVA reuses a trained CLIP vision tower; ours is tiny-clip's.
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    return model, processor


def prompt_text(processor):
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": PROMPT}],
        }
    ]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )


def answer_sequences(processor, image):
    """Token ids of prompt + answer + EOS for each class, and the answer's start."""
    prompt = prompt_text(processor)
    prompt_ids = processor(images=[image], text=[prompt], return_tensors="pt")[
        "input_ids"
    ][0]
    tok = processor.tokenizer
    rows = []
    for name in DIGIT_NAMES:
        answer = tok(ANSWER.format(name), add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids.tolist() + answer + [tok.eos_token_id])
    lengths = {len(r) for r in rows}
    assert len(lengths) == 1, "every answer must tokenize to the same length"
    return torch.tensor(rows), len(prompt_ids)


def tower_features(model, pix, batch_size=512):
    """The frozen tower's selected feature layer, CLS dropped (LLaVA 'default')."""
    cfg = model.config
    out = []
    with torch.inference_mode():
        for i in range(0, len(pix), batch_size):
            hidden = model.model.vision_tower(
                pixel_values=pix[i : i + batch_size], output_hidden_states=True
            ).hidden_states
            out.append(hidden[cfg.vision_feature_layer][:, 1:])
    return torch.cat(out)


def llava_logits(model, ids, features):
    """Logits of the LLaVA forward pass from precomputed tower features.

    The same computation as ``LlavaForConditionalGeneration.forward`` (checked in
    main), minus the frozen tower, which ran once for every image.
    """
    embeds = model.model.get_input_embeddings()(ids)
    image = model.model.multi_modal_projector(features)
    mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, image.to(embeds.dtype))
    hidden = model.model.language_model(
        inputs_embeds=embeds, use_cache=False
    ).last_hidden_state
    return model.lm_head(hidden)


def train_llava(
    model, seqs, start, feats, y, *, epochs, batch_size=64, lr=2e-3, log=print
):
    """Train projector + language model on the answers; the tower stays frozen."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    y = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(SEED + 2)
    steps = epochs * math.ceil(len(y) / batch_size)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = schedule(opt, steps, warmup=steps // 20)
    model.train()
    for epoch in range(epochs):
        total = correct = 0.0
        for idx in batches(len(y), batch_size, gen):
            ids = seqs[y[idx]]
            logits = llava_logits(model, ids, feats[idx])
            # Next-token loss on the answer and EOS only (not on the prompt).
            pred, target = logits[:, start - 1 : -1], ids[:, start:]
            loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            digit_pos = ANSWER.split().index(
                "{}."
            )  # the class word's offset in the answer
            correct += (
                (pred[:, digit_pos].argmax(-1) == target[:, digit_pos]).sum().item()
            )
        log(
            f"  llava epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f}, "
            f"class-token accuracy {correct / len(y):.3f}"
        )
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(True)
    return model.eval()


@torch.inference_mode()
def evaluate_llava(model, processor, images, y, train, test, batch_size=150):
    """Greedy generation, the answer-prefix probabilities and a last-token probe."""
    tok = processor.tokenizer
    prompt = prompt_text(processor)
    prefix = prompt + " " + ANSWER.split("{}")[0].strip()
    digit_ids = tok.convert_tokens_to_ids(list(DIGIT_NAMES))
    generated, probabilistic, last = [], [], []
    for i in range(0, len(images), batch_size):
        chunk = list(images[i : i + batch_size])
        inputs = processor(
            images=chunk, text=[prompt] * len(chunk), return_tensors="pt", padding=True
        )
        out = model(**inputs, output_hidden_states=True, use_cache=False)
        last.append(out.hidden_states[-1][:, -1])
        gen = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        generated += tok.batch_decode(
            gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        pre = processor(
            images=chunk, text=[prefix] * len(chunk), return_tensors="pt", padding=True
        )
        probabilistic.append(
            model(**pre, use_cache=False).logits[:, -1, digit_ids].argmax(-1)
        )
    named = np.array([_first_digit_name(text) for text in generated])
    probabilistic = torch.cat(probabilistic).numpy()
    last = torch.cat(last).numpy()
    return {
        "llava greedy answer names the digit (test)": float(
            (named[test] == y[test]).mean()
        ),
        "llava answer contains a digit name (test)": float((named[test] >= 0).mean()),
        "llava P(class | 'The photo features a') (test)": float(
            (probabilistic[test] == y[test]).mean()
        ),
        "llava linear probe, last layer, last token (test)": probe_accuracy(
            last, y, train, test
        ),
    }, generated


def _first_digit_name(text):
    for word in text.replace(".", " ").split():
        if word in DIGIT_NAMES:
            return DIGIT_NAMES.index(word)
    return -1


# -- saving --------------------------------------------------------------------
def save(model, processor, path, card):
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "README.md").write_text(card)
    return sum(f.stat().st_size for f in path.iterdir())


def card(name, what, results, seconds):
    lines = [
        f"# skvlm/{name}",
        "",
        what,
        "",
        "Trained by `python scripts/train_embedded_models.py` in the skvlm repository "
        f"({seconds:.0f} s). Accuracies on the 450 held-out clean test digits "
        "(`train_test_split(range(1797), test_size=0.25, stratify=target, "
        "random_state=0)`):",
        "",
    ]
    lines += [f"- {k}: {v:.3f}" for k, v in results.items()]
    return "\n".join(lines) + "\n"


def check_pixels(processor, images):
    """Training uses ``pixels``; it must equal what the saved processor gives."""
    ours = pixels(images)
    theirs = processor.image_processor(images=images, return_tensors="pt")[
        "pixel_values"
    ]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "skvlm" / "_data" / "models"),
    )
    parser.add_argument("--clip-epochs", type=int, default=10)
    parser.add_argument("--llava-epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    images, y, train, test, aug_images, aug_y = load_data()
    pix = pixels(aug_images)
    log(
        f"data: {len(train)} train / {len(test)} test images, {len(aug_images)} training "
        f"renderings"
    )

    clip, clip_processor = build_clip()
    check_pixels(clip_processor, aug_images[:64])
    train_clip(clip, clip_processor, pix, aug_y, epochs=args.clip_epochs, log=log)
    t_clip = time.perf_counter() - t0
    results = evaluate_clip(clip, clip_processor, images, y, train, test)
    log(f"tiny-clip trained in {t_clip:.0f} s: {results}")

    llava, llava_processor = build_llava(clip)
    seqs, start = answer_sequences(llava_processor, images[0])
    feats = tower_features(llava, pix)
    with torch.inference_mode():  # the shortcut equals HF's own forward pass
        ids = seqs[torch.as_tensor(aug_y[:4])]
        full = llava(input_ids=ids, pixel_values=pix[:4], use_cache=False).logits
        torch.testing.assert_close(llava_logits(llava, ids, feats[:4]), full)
    t1 = time.perf_counter()
    train_llava(llava, seqs, start, feats, aug_y, epochs=args.llava_epochs, log=log)
    t_llava = time.perf_counter() - t1
    llava_results, generated = evaluate_llava(
        llava, llava_processor, images, y, train, test
    )
    log(f"tiny-llava trained in {t_llava:.0f} s; sample answers: {generated[:3]}")
    results.update(llava_results)

    out = Path(args.out)
    clip_card = card(
        "tiny-clip",
        "A CLIP model (`CLIPModel`, ViT 32 px / patch 8) trained "
        "contrastively on skvlm's embedded digit images and their captions.",
        {k: v for k, v in results.items() if k.startswith("clip")},
        t_clip,
    )
    llava_card = card(
        "tiny-llava",
        "A LLaVA-1.5 model (`LlavaForConditionalGeneration`: "
        "tiny-clip's vision tower, MLP projector, 3-layer Llama) trained to "
        f"answer {PROMPT!r} with {ANSWER!r}.",
        {k: v for k, v in results.items() if k.startswith("llava")},
        t_llava,
    )
    sizes = {
        "tiny-clip": save(clip, clip_processor, out / "tiny-clip", clip_card),
        "tiny-llava": save(llava, llava_processor, out / "tiny-llava", llava_card),
    }
    total = time.perf_counter() - t0

    print("\n| measure | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value:.3f} |")
    for key, value in sizes.items():
        n = sum(p.numel() for p in (clip if key == "tiny-clip" else llava).parameters())
        print(f"| {key}: parameters / folder size | {n:,} / {value / 1e6:.2f} MB |")
    print(f"| wall time (threads={args.threads}) | {total:.0f} s |")
    print(json.dumps({"results": results, "sizes": sizes, "seconds": total}))


if __name__ == "__main__":
    main()
