"""Probabilistic class scoring: KV-cached batched continuations vs one full pass per class.

A LLaVA-1.5-architecture model with random weights (CLIP tower at 336 px / patch 14,
so 576 image tokens; a Llama LM of width 384, 6 layers, a 32k vocabulary) scores
100 class names on a few images, two ways, in one run:

- **cached**: ``VLMGenerativeClassifier.decision_function`` (image + prompt +
  answer prefix run once per image with the KV cache kept; the 100 class names are
  scored in batched passes on top of the cache);
- **naive**: the paper's method, one full forward pass of image + prompt + answer
  prefix + class name per class (``logits_to_keep`` limits the LM head to the
  positions scored, which favours the naive side).

Prints both times, their ratio, and the largest score difference (target 1e-4).

    python benchmarks/bench_generative_scoring.py                  # 2 images, 576 tokens
    python benchmarks/bench_generative_scoring.py --image-size 168 # 144 image tokens
"""

import argparse
import tempfile
import time

import numpy as np
import torch

from skvlm.classifiers._generative import VLMGenerativeClassifier
from skvlm.models import load_adapter
from skvlm.testing import random_images
from skvlm.testing._generative import make_tiny_llava

NUMBERS = "zero one two three four five six seven eight nine".split()
OBJECTS = "cat dog car bird flower plane ship truck frog horse".split()
COLORS = "red green blue".split()
ANSWER = "The photo features a"
PROMPT = "What type of object is in this photo?"


def class_names(n):
    """``n`` distinct names of 2 or 3 known words ("red two cat", "three dog")."""
    names = [f"{num} {obj}" for num in NUMBERS for obj in OBJECTS]
    names = [
        f"{COLORS[i % 3]} {name}" if i % 4 == 0 else name
        for i, name in enumerate(names)
    ]
    return names[:n]


def build_model(path, image_size):
    from transformers import AutoProcessor

    make_tiny_llava(
        path,
        vision_config=dict(
            image_size=image_size,
            patch_size=14,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        text_config=dict(
            hidden_size=384,
            intermediate_size=1024,
            num_hidden_layers=6,
            num_attention_heads=6,
            num_key_value_heads=6,
            vocab_size=32064,
        ),
    )
    processor = AutoProcessor.from_pretrained(path)
    processor.image_processor.size = {"shortest_edge": image_size}
    processor.image_processor.crop_size = {"height": image_size, "width": image_size}
    processor.patch_size = 14
    processor.save_pretrained(path)
    return path


def naive_scores(path, images, names, prompt):
    """One full forward pass per (image, class): the paper's method."""
    adapter = load_adapter(path, device="cpu")
    tokenizer = adapter.processor.tokenizer
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    out = np.zeros((len(images), len(names)))
    for i, image in enumerate(images):
        batch = dict(adapter.prepare([image], [adapter.format_prompt(prompt)]))
        n_prompt = batch["input_ids"].shape[1]
        for c, name in enumerate(names):
            joint = tokenizer(f"{ANSWER} {name}", add_special_tokens=False)["input_ids"]
            target = joint[len(answer) :]
            extra = torch.tensor([answer + target])
            ids = torch.cat([batch["input_ids"], extra], dim=1)
            with torch.inference_mode():
                logits = adapter.model(
                    input_ids=ids,
                    pixel_values=batch["pixel_values"],
                    logits_to_keep=len(target) + 1,
                ).logits[0, :-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            out[i, c] = sum(logp[k, t].item() for k, t in enumerate(target))
        if i == 0:
            tokens = n_prompt + len(answer)
    return out, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--class-batch-size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    path = build_model(tempfile.mkdtemp(), args.image_size)
    names = class_names(args.classes)
    images = random_images(args.images, seed=0)
    # the labels are the names themselves; fit reads no image without calibration
    clf = VLMGenerativeClassifier(
        path, device="cpu", class_batch_size=args.class_batch_size
    ).fit([images[i % len(images)] for i in range(len(names))], names)
    clf.decision_function(images[:1])  # warm-up: load weights, first-call overheads

    start = time.perf_counter()
    fast = clf.decision_function(images)
    cached_s = time.perf_counter() - start
    start = time.perf_counter()
    slow, prefix_tokens = naive_scores(path, images, names, PROMPT)
    naive_s = time.perf_counter() - start

    # fit sorted the labels (the names themselves): reorder the naive columns
    order = [names.index(c) for c in clf.classes_]
    diff = np.abs(fast - slow[:, order]).max()
    print(
        f"prefix: {prefix_tokens} tokens, {args.classes} classes, {args.images} images"
    )
    print(f"cached: {cached_s:.2f} s ({cached_s / args.images:.2f} s/image)")
    print(f"naive:  {naive_s:.2f} s ({naive_s / args.images:.2f} s/image)")
    print(f"speed-up: {naive_s / cached_s:.1f}x, max |score difference|: {diff:.2e}")
    print(f"threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
