"""Decoding and preprocessing in worker threads, overlapped with the forward pass.

Three measurements (issue "Paper scale", item 1):

1. **Preprocessing throughput against the worker count**: JPEG decoding plus a
   CLIP image processor (224 px), no model, on 500x375 photographs-like JPEGs.
2. **Overlap**: a CLIP vision tower whose forward pass costs about as much as
   preprocessing (calibrated on this machine, torch on one thread); a transform
   with one worker should take close to the larger of the two, not their sum
   (target: at most 0.65x the serial time on 2 cores).
3. ``--gpu``: images/s of a ViT-L/14-336-sized CLIP tower and a LLaVA-1.5-7B-
   sized model (random weights, bf16) through skvlm, against their forward-only
   throughput on pre-made tensors (target >= 0.9x). ``--gpu --smoke`` runs the
   same code on tiny sizes on the CPU, to check the script itself.

Run: python benchmarks/bench_preprocessing.py [--n-images 192] [--gpu [--smoke]]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from _common import clip_tower, interleaved, machine
from PIL import Image


def make_jpegs(folder, n, size=(500, 375), seed=0):
    """``n`` JPEGs with smooth gradients and noise (decode cost like photographs)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        base = np.stack(
            [
                (xx * rng.uniform(0.2, 0.6) + yy * rng.uniform(0.1, 0.5)) % 256,
                (xx * rng.uniform(0.1, 0.4) - yy * rng.uniform(0.2, 0.6)) % 256,
                (np.sin(xx / rng.uniform(5, 40)) * 60 + yy * 0.3) % 256,
            ],
            axis=-1,
        )
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def preprocessing_throughput(extraction, paths, workers, repeats):
    """Images/s of decoding + preprocessing alone, per worker count."""
    bs = extraction.batch_size
    chunks = [list(range(i, min(i + bs, len(paths)))) for i in range(0, len(paths), bs)]

    def run(n):
        def go():
            extraction.n_workers = n
            for _ in extraction.prepared(paths, None, chunks):
                pass

        return go

    times = interleaved({n: run(n) for n in workers}, repeats)
    return {n: len(paths) / t for n, t in times.items()}


def overlap(paths, folder, args):
    """Serial vs one worker on a tower calibrated to cost about what preprocessing does."""
    from skvlm._extraction import Extraction
    from skvlm.models import load_adapter

    torch.set_num_threads(1)
    probe = load_adapter(
        clip_tower(os.path.join(folder, "probe"), layers=1), device="cpu"
    )
    ex = Extraction(probe, "vision", batch_size=args.batch_size, n_workers=0)
    sample = paths[: 2 * args.batch_size]
    chunks = [
        list(range(0, args.batch_size)),
        list(range(args.batch_size, len(sample))),
    ]
    start = time.perf_counter()
    prepared = [b for _, b, _ in ex.prepared(sample, None, chunks)]
    prep = (time.perf_counter() - start) / len(sample)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in prepared:
            probe.extract(batch, "vision", [(1, "cls")])
    per_layer = (time.perf_counter() - start) / len(sample)
    layers = max(1, round(prep / per_layer))
    tower = load_adapter(clip_tower(os.path.join(folder, "tower"), layers=layers))
    ex = Extraction(tower, "vision", batch_size=args.batch_size)
    requests = [(layers, "cls")]

    def run(n):
        def go():
            ex.n_workers = n
            for _ in ex.batches(paths, None, requests, []):
                pass

        return go

    times = interleaved({"serial": run(0), "1 worker": run(1)}, args.repeats)
    # The parts alone, for the "larger of the two" the overlap should approach.
    start = time.perf_counter()
    ex.n_workers = 0
    batches = [b for _, b, _ in ex.prepared(paths, None, _chunks(len(paths), args))]
    prep_total = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            tower.extract(batch, "vision", requests)
    forward_total = time.perf_counter() - start
    return layers, times, prep_total, forward_total


def _chunks(n, args):
    bs = args.batch_size
    return [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]


def gpu_throughput(paths, folder, args):
    """skvlm's images/s vs forward-only on pre-made tensors, for two paper-sized models."""
    from skvlm._extraction import Extraction

    device = "cuda" if not args.smoke else "cpu"
    dtype = torch.bfloat16 if not args.smoke else torch.float32
    results = {}
    for name, build in (("ViT-L/14-336", _vit_l_336), ("LLaVA-1.5-7B", _llava_7b)):
        adapter, stage, requests = build(folder, device, dtype, args.smoke)
        ex = Extraction(adapter, stage, batch_size=args.batch_size, n_workers=0)
        chunks = _chunks(len(paths), args)
        ex.n_workers = 0
        premade = [b for _, b, _ in ex.prepared(paths, None, chunks)]
        ex.n_workers = min(8, (os.cpu_count() or 2) - 1)

        def forward_only(
            premade=premade, adapter=adapter, stage=stage, requests=requests
        ):
            with torch.inference_mode():
                for batch in premade:
                    out = adapter.extract(batch, stage, requests)
                _sync(out)

        def pipeline(ex=ex, requests=requests):
            for _ in ex.batches(paths, None, requests, []):
                pass

        forward_only()  # warm-up (cuDNN autotuning, allocator)
        times = interleaved(
            {"forward only": forward_only, "skvlm": pipeline}, args.repeats
        )
        results[name] = {k: len(paths) / t for k, t in times.items()}
        del adapter, ex, premade
        if device == "cuda":
            torch.cuda.empty_cache()
    return results


def _sync(out):
    for value in out.values():
        value.float().cpu()


def _vit_l_336(folder, device, dtype, smoke):
    from skvlm.models import load_adapter

    size = (
        dict(hidden=64, layers=2, heads=4, image=56, patch=14)
        if smoke
        else dict(hidden=1024, layers=24, heads=16, image=336, patch=14)
    )
    path = clip_tower(os.path.join(folder, "vit-l-336"), **size)
    adapter = load_adapter(path, device=device, dtype=dtype)
    return adapter, "vision", [(adapter.n_layers("vision") - 1, "cls")]


def _llava_7b(folder, device, dtype, smoke):
    """LLaVA-1.5-7B's architecture with random weights, built on the device."""
    from transformers import AutoProcessor, LlavaConfig, LlavaForConditionalGeneration

    from skvlm.models import adapter_class
    from skvlm.testing import make_tiny_llava

    tiny = make_tiny_llava(os.path.join(folder, "tiny-llava"))
    processor = AutoProcessor.from_pretrained(tiny)
    image = 56 if smoke else 336
    processor.image_processor.size = {"shortest_edge": image}
    processor.image_processor.crop_size = {"height": image, "width": image}
    processor.patch_size = 14
    config = LlavaConfig.from_pretrained(tiny)
    vision = dict(
        hidden_size=64 if smoke else 1024,
        intermediate_size=128 if smoke else 4096,
        num_hidden_layers=2 if smoke else 24,
        num_attention_heads=4 if smoke else 16,
        image_size=image,
        patch_size=14,
        projection_dim=64 if smoke else 768,
    )
    text = dict(
        hidden_size=64 if smoke else 4096,
        intermediate_size=128 if smoke else 11008,
        num_hidden_layers=2 if smoke else 32,
        num_attention_heads=4 if smoke else 32,
        num_key_value_heads=4 if smoke else 32,
        vocab_size=32064,
    )
    for key, value in vision.items():
        setattr(config.vision_config, key, value)
    for key, value in text.items():
        setattr(config.text_config, key, value)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    adapter = adapter_class(config)(model, processor)
    adapter.source = {"model": "llava-1.5-7b-sized", "path": None, "revision": None}
    return adapter, "language", [(adapter.n_layers("language") - 1, "last")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="0,1,2,4")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="--gpu on tiny sizes")
    args = parser.parse_args()

    from skvlm._extraction import Extraction
    from skvlm.models import load_adapter

    folder = tempfile.mkdtemp(prefix="bench-pre-")
    paths = make_jpegs(folder, args.n_images)
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()}")
    print(f"{args.n_images} JPEGs 500x375, batch {args.batch_size}")

    if args.gpu:
        for name, rates in gpu_throughput(paths, folder, args).items():
            ratio = rates["skvlm"] / rates["forward only"]
            print(
                f"  {name}: skvlm {rates['skvlm']:.1f} images/s, forward only "
                f"{rates['forward only']:.1f} images/s, ratio {ratio:.3f} "
                "(target >= 0.9)"
            )
        return

    torch.set_num_threads(1)
    clip = load_adapter(clip_tower(os.path.join(folder, "clip-b32"), layers=1))
    ex = Extraction(clip, "vision", batch_size=args.batch_size)
    workers = [int(w) for w in args.workers.split(",")]
    rates = preprocessing_throughput(ex, paths, workers, args.repeats)
    print("1. decoding + CLIP preprocessing (224 px), no model:")
    for n, rate in rates.items():
        print(f"  {n} worker(s): {rate:7.1f} images/s  ({rate / rates[0]:.2f}x)")

    layers, times, prep, forward = overlap(paths, folder, args)
    print(
        f"2. overlap: CLIP B/32 tower with {layers} layer(s), torch on 1 thread; "
        f"preprocessing alone {prep:.2f} s, forward alone {forward:.2f} s"
    )
    for name, seconds in times.items():
        print(f"  {name:>9}: {seconds:6.2f} s")
    ratio = times["1 worker"] / times["serial"]
    bound = max(prep, forward) / (prep + forward)
    print(
        f"  ratio 1 worker / serial = {ratio:.3f} (target <= 0.65; the ideal, "
        f"max/sum of the parts, is {bound:.3f})"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
