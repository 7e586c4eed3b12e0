"""Train the tiny vision-language models shipped inside skvlm.

    python scripts/train_embedded_models.py            # writes skvlm/_data/models/
    python scripts/train_embedded_models.py --models llava --seeds 0

All models learn from ``skvlm.datasets.load_digit_images`` (scikit-learn's 8x8
digits drawn as 32 px RGB images), nothing else, and are saved with
``save_pretrained`` so that ``from_pretrained`` and skvlm load them by name:

- ``tiny-clip``: ``CLIPModel`` + ``CLIPProcessor`` trained contrastively on
  image / caption pairs ("a photo of the digit three", ...), every class
  equally often: it stands for CLIP trained on web-scale data;
- ``tiny-llava`` (seed 0), ``tiny-llava-seed1``, ``tiny-llava-seed2``:
  ``LlavaForConditionalGeneration`` (tiny-clip's vision tower, frozen; MLP
  projector; Llama LM) + ``LlavaProcessor`` with the LLaVA-1.5 chat template,
  trained with a class-frequency schedule (``scripts/paper_tiny_llava.py``):
  a text-only stage naming every digit, then an instruction stage in which, per
  seed, the digits are named in the answers at shares spanning three orders of
  magnitude, down to zero, and otherwise answered generically ("The photo
  features a digit ."). The exact training text is saved beside the weights.

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
import paper_tiny_llava as tl  # this script's folder: scripts/paper_tiny_llava.py
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
EXTRA_WORDS = ("The", "USER", "ASSISTANT", "What", "photo", "features", "digit")


# -- data ----------------------------------------------------------------------
def load_data():
    """Clean images, labels, the split, and augmented training renderings.

    Returns also, for each training rendering, its index into the 1797 digits and
    its rendering number (0 clean, 1.. augmented).
    """
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
    index = np.tile(train, N_AUGMENTED + 1)
    rendering = np.repeat(np.arange(N_AUGMENTED + 1), len(train))
    return (
        clean.images,
        y,
        train,
        test,
        aug_images,
        np.concatenate(aug_y),
        index,
        rendering,
    )


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


def llava_name(seed):
    return "tiny-llava" if seed == 0 else f"tiny-llava-seed{seed}"


def train_one_llava(clip, seed, data, args, out, log):
    """Build, train, evaluate and save one tiny-llava; return its results."""
    images, y, train, test, aug_images, aug_y, index, rendering = data
    t0 = time.perf_counter()
    llava, processor = tl.build_llava(
        clip,
        make_tokenizer,
        add_bos_eos,
        image_processor,
        LLAVA_TEMPLATE,
        SEED + 1 + seed,
    )
    named, generic, info = tl.frequency_schedule(aug_y, seed)
    words = tl.answer_words(aug_y, named, generic)
    log(
        f"tiny-llava seed {seed}: classes by share {info['order']}, named {info['named']}"
    )
    pix = pixels(aug_images)
    seqs, start = tl.answer_ids(processor, images[0], words)
    feats = tl.tower_features(llava, pix)
    with torch.inference_mode():  # the shortcut equals HF's own forward pass
        full = llava(input_ids=seqs[:4], pixel_values=pix[:4], use_cache=False).logits
        torch.testing.assert_close(tl.llava_logits(llava, seqs[:4], feats[:4]), full)
    tl.train_text(
        llava,
        processor,
        epochs=args.text_epochs,
        schedule=schedule,
        seed=SEED + 3 + seed,
        log=log,
    )
    tl.train_instructions(
        llava,
        seqs,
        start,
        feats,
        epochs=args.llava_epochs,
        schedule=schedule,
        seed=SEED + 2 + seed,
        log=log,
    )
    seconds = time.perf_counter() - t0
    results, per_class, answers = tl.evaluate(
        llava, processor, images, y, train, test, probe_accuracy
    )
    log(f"tiny-llava seed {seed} trained in {seconds:.0f} s; answers {answers[:3]}")
    log(f"  per-class open-ended accuracy: {per_class}")
    name = llava_name(seed)
    text = (
        "A LLaVA-1.5 model (`LlavaForConditionalGeneration`: tiny-clip's vision "
        "tower, MLP projector, 3-layer Llama) trained with a class-frequency "
        f"schedule (seed {seed}): it answers {tl.PROMPT!r} with "
        f"{tl.ANSWER.format('<digit name>')!r} for a share of each digit's training "
        "images spanning 1 to 0.001 and zero, and generically otherwise. The "
        "training text is in `pretraining_text.txt.gz` and "
        "`instruction_text.jsonl.gz`, the schedule in `schedule.json`."
    )
    card_text = card(name, text, results, seconds)
    card_text += (
        "\nPer-class open-ended accuracy (test) and named training renderings:\n\n"
    )
    card_text += "".join(
        f"- {d}: {per_class[d]:.3f} ({info['named'][d]} of {info['renderings'][d]})\n"
        for d in info["order"]
    )
    size = save(llava, processor, out / name, card_text)
    tl.save_training_text(
        out / name, processor, index, rendering, aug_y, words, dict(info, seed=seed)
    )
    size = sum(f.stat().st_size for f in (out / name).iterdir())
    n = sum(p.numel() for p in llava.parameters())
    return name, results, per_class, size, n, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "skvlm" / "_data" / "models"),
    )
    parser.add_argument(
        "--models",
        default="clip,llava",
        help="comma-separated: clip, llava (without clip, tiny-clip is read from --out)",
    )
    parser.add_argument("--seeds", default="0,1,2", help="tiny-llava seeds")
    parser.add_argument("--clip-epochs", type=int, default=10)
    parser.add_argument("--text-epochs", type=int, default=40)
    parser.add_argument("--llava-epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    models = set(args.models.split(","))
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    data = load_data()
    images, y, train, test, aug_images, aug_y, _, _ = data
    log(
        f"data: {len(train)} train / {len(test)} test images, {len(aug_images)} "
        "training renderings"
    )
    out = Path(args.out)
    rows, sizes = {}, {}
    if "clip" in models:
        clip, clip_processor = build_clip()
        check_pixels(clip_processor, aug_images[:64])
        train_clip(
            clip,
            clip_processor,
            pixels(aug_images),
            aug_y,
            epochs=args.clip_epochs,
            log=log,
        )
        t_clip = time.perf_counter() - t0
        results = evaluate_clip(clip, clip_processor, images, y, train, test)
        log(f"tiny-clip trained in {t_clip:.0f} s: {results}")
        clip_card = card(
            "tiny-clip",
            "A CLIP model (`CLIPModel`, ViT 32 px / patch 8) trained "
            "contrastively on skvlm's embedded digit images and their captions.",
            results,
            t_clip,
        )
        sizes["tiny-clip"] = save(clip, clip_processor, out / "tiny-clip", clip_card)
        rows.update(results)
    else:
        from transformers import CLIPModel

        clip = CLIPModel.from_pretrained(out / "tiny-clip").eval()
        log(f"tiny-clip read from {out / 'tiny-clip'}")
    if "llava" in models:
        for seed in seeds:
            name, results, per_class, size, n, seconds = train_one_llava(
                clip, seed, data, args, out, log
            )
            sizes[name] = size
            rows.update({f"{name}: {k}": v for k, v in results.items()})
    total = time.perf_counter() - t0

    print("\n| measure | value |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value:.3f} |")
    for key, value in sizes.items():
        print(f"| {key}: folder size | {value / 1e6:.2f} MB |")
    print(f"| wall time (threads={args.threads}) | {total:.0f} s |")
    print(json.dumps({"results": rows, "sizes": sizes, "seconds": total}))


if __name__ == "__main__":
    main()
