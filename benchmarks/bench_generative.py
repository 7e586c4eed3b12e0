"""skvlm's language-stage transform vs a bare Hugging Face loop, on a LLaVA-1.5 model.

The model has LLaVA-1.5's architecture with random weights, sized for this CPU: a
CLIP ViT-B/32-sized tower (hidden 768, 12 blocks, 224 px, patch 32: 49 image
tokens after dropping CLS, ``vision_feature_layer=-2``), an MLP projector and an
8-block Llama language model of width 1024. Speed does not depend on the weights'
values. Three measurements, side by side in one run:

1. images/s of ``stage="language", layer=-1, pooling="last"`` vs a bare loop that
   calls the model with ``output_hidden_states=True`` and pools the last token
   itself (both checked equal to 1e-4 first); wall and CPU time, the latter
   being less sensitive to other work on a shared machine;
2. the time of one requested language layer k of N (k = 1, N/2, N) against the
   line "vision + k/N of the language model" fitted through the vision-stage-only
   time (k = 0 end) and the full time (k = N end);
3. peak memory of 64 images at batch 16, each contender in a fresh subprocess:
   the peak resident set size is reset after loading (``/proc/self/clear_refs``),
   and the growth of the peak over the post-load resident size is reported.

Run: python benchmarks/bench_generative.py [--n-images 16] [--batch-size 16]
[--memory-images 64] (about 3.5 minutes of CPU time; 15 minutes of wall time on
a 2-core machine at load average 15 to 30; ``--memory-images 0`` skips part 3)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from _common import interleaved, machine
from PIL import Image

PROMPT = "What type of object is in this photo?"
N_LM_LAYERS = 8


def build_llava(path):
    """Save a LLaVA-1.5-architecture model with random weights to ``path``."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from skvlm.testing import make_tokenizer
    from skvlm.testing._generative import LLAVA_TEMPLATE

    tokenizer = make_tokenizer(
        ["<image>"],
        extra_words=PROMPT.replace("?", " ?").split() + ["USER", "ASSISTANT"],
        padding_side="left",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
        ),
        tokenizer=tokenizer,
        patch_size=32,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
            projection_dim=512,
        ),
        text_config=dict(
            model_type="llama",
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=N_LM_LAYERS,
            num_attention_heads=16,
            num_key_value_heads=8,
            max_position_embeddings=512,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_images(n):
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
        for _ in range(n)
    ]


def bare_loop(path):
    """What a user writes with transformers alone: processor, forward, pool."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": PROMPT}],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)

    def run(images, batch_size, tokens_only=False):
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                chunk = images[i : i + batch_size]
                batch = processor(
                    images=chunk,
                    text=[text] * len(chunk),
                    return_tensors="pt",
                    padding=True,
                )
                if tokens_only:  # the merged sequence length, for the memory note
                    return batch["input_ids"].shape[1]
                outputs = model(**batch, output_hidden_states=True, use_cache=False)
                hidden = outputs.hidden_states[-1]
                # last non-padding token of each row (left or right padding)
                mask = batch["attention_mask"]
                last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
                out.append(hidden[torch.arange(len(chunk)), last].float().numpy())
        return np.concatenate(out)

    return run


def timed(runs, repeats):
    """Median wall seconds (``interleaved``) and median CPU seconds of each run.

    CPU time (all of this process's threads) is less sensitive than wall time to
    other work on a shared machine.
    """
    cpu = {name: [] for name in runs}

    def counting(name, fn):
        def run():
            start = time.process_time()
            fn()
            cpu[name].append(time.process_time() - start)

        return run

    wall = interleaved({name: counting(name, fn) for name, fn in runs.items()}, repeats)
    return wall, {name: statistics.median(values) for name, values in cpu.items()}


def skvlm_transformer(path, batch_size, **site):
    from skvlm import VLMEmbeddingTransformer

    site = {"stage": "language", "layer": -1, "pooling": "last", **site}
    return VLMEmbeddingTransformer(path, batch_size=batch_size, **site).fit(None)


# -- peak memory, one contender per fresh process --------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    """Reset the kernel's peak-RSS counter (VmHWM); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(path, contender, n_images, batch_size):
    images = make_images(n_images)
    if contender == "skvlm":
        vlm = skvlm_transformer(path, batch_size)
        run = vlm.transform
    else:
        loop = bare_loop(path)

        def run(images):
            return loop(images, batch_size)

    run(images[:1])  # load lazily created state (kernels, allocator arenas) first
    gc.collect()
    maxrss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak()
    rss_loaded = _status_kb("VmRSS")
    start = time.perf_counter()
    run(images)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "rss_loaded_kb": rss_loaded,
                "peak_kb": _status_kb("VmHWM"),
                "reset": reset,
                "maxrss_loaded_kb": maxrss_loaded,
                "maxrss_after_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "seconds": seconds,
            }
        )
    )


def measure_memory(path, n_images, batch_size):
    results = {}
    for contender in ("skvlm", "bare HF loop"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                contender,
                "--path",
                path,
                "--memory-images",
                str(n_images),
                "--batch-size",
                str(batch_size),
                "--threads",
                str(torch.get_num_threads()),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[contender] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


# -- the run -------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--memory-images", type=int, default=64, help="0 skips the memory part"
    )
    parser.add_argument("--memory-child", default=None)
    parser.add_argument("--path", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.path, args.memory_child, args.memory_images, args.batch_size)
        return

    with tempfile.TemporaryDirectory() as tmp:
        run_all(args, str(build_llava(tmp)))


def report_memory(args, path, tokens):
    n, bs = N_LM_LAYERS, args.batch_size
    mem = measure_memory(path, args.memory_images, bs)
    print(
        f"\n3. peak memory, {args.memory_images} images at batch {bs}, "
        "each in a fresh process (MiB over the resident size after loading)"
    )
    for name, r in mem.items():
        growth = (
            (r["peak_kb"] - r["rss_loaded_kb"]) / 1024 if r["reset"] else float("nan")
        )
        maxrss = (r["maxrss_after_kb"] - r["maxrss_loaded_kb"]) / 1024
        print(
            f"  {name:>15}: peak growth {growth:7.1f} MiB   ru_maxrss growth {maxrss:7.1f} MiB"
            f"   (resident after loading {r['rss_loaded_kb'] / 1024:.0f} MiB, run {r['seconds']:.1f} s)"
        )
    kept = (n + 1) * tokens * 1024 * 4 * args.memory_images / 2**20
    print(
        f"  (a loop keeping every language layer's full sequences for all "
        f"{args.memory_images} images would also hold {kept:.0f} MiB: {n + 1} entries x "
        f"{tokens} tokens x 1024 x float32 per image)"
    )


def run_all(args, path):
    wall = time.perf_counter()
    load = os.getloadavg()[0]
    images = make_images(args.n_images)
    bs = args.batch_size
    loop = bare_loop(path)
    n = N_LM_LAYERS
    layers = [1, n // 2, n]
    vision = skvlm_transformer(path, bs, stage="vision", layer=-1, pooling="cls")
    by_layer = {k: skvlm_transformer(path, bs, layer=k) for k in layers}
    full = by_layer[n]

    np.testing.assert_allclose(
        full.transform(images[:4]), loop(images[:4], bs), atol=1e-4
    )

    runs = {"bare HF loop": lambda: loop(images, bs)}
    runs.update(
        {
            f"skvlm layer {k}": (lambda t=t: t.transform(images))
            for k, t in by_layer.items()
        }
    )
    runs["skvlm vision only"] = lambda: vision.transform(images)
    times, cpu = timed(runs, args.repeats)

    print(f"machine: {machine()}")
    print(
        f"LLaVA-1.5 architecture, random weights: CLIP ViT-B/32-sized tower "
        f"(12 blocks, 49 image tokens), {n}-block Llama LM of width 1024; "
        f"{args.n_images} images 224x224, batch {bs}, median of {args.repeats}, interleaved"
    )
    bare, ours = times["bare HF loop"], times[f"skvlm layer {n}"]
    print("\n1. language stage, last layer, pooling='last' (agree to 1e-4: checked)")
    for name, key in (("bare HF loop", "bare HF loop"), ("skvlm", f"skvlm layer {n}")):
        print(
            f"  {name:>13}: {times[key]:7.2f} s  {args.n_images / times[key]:6.2f} images/s"
            f"   CPU {cpu[key]:7.2f} s"
        )
    cpu_ratio = cpu[f"skvlm layer {n}"] / cpu["bare HF loop"]
    print(
        f"  ratio skvlm / bare = {ours / bare:.3f} wall, {cpu_ratio:.3f} CPU"
        "  (target <= 1.00)"
    )

    t_vision = times["skvlm vision only"]
    print(
        f"\n2. one requested language layer k of N = {n} (expected: vision + k/N of the LM)"
    )
    for label, t in (("wall", times), ("CPU", cpu)):
        t_vision, t_full = t["skvlm vision only"], t[f"skvlm layer {n}"]
        print(f"  {label} time; vision stage only: {t_vision:7.2f} s")
        print(
            f"  {'k':>5} {'measured s':>11} {'expected s':>11} {'ratio':>6} {'vs full':>8}"
        )
        for k in layers:
            expected = t_vision + k / n * (t_full - t_vision)
            measured = t[f"skvlm layer {k}"]
            print(
                f"  {k:>5} {measured:11.2f} {expected:11.2f} {measured / expected:6.2f} "
                f"{measured / t_full:8.2f}"
            )
    if args.memory_images:
        report_memory(args, path, loop(images[:1], 1, tokens_only=True))
    cpu_total = sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    )
    print(
        f"\ntotal wall time {time.perf_counter() - wall:.0f} s, CPU time {cpu_total:.0f} s "
        f"(load average {os.getloadavg()[0]:.1f} at the end, {load:.1f} at the start)"
    )


if __name__ == "__main__":
    main()
