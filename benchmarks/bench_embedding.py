"""skvlm's transform vs a bare batched Hugging Face loop, on a ViT-B/32-sized CLIP.

The sklearn layer (input validation, decoding, hooks, pooling, output assembly)
should cost under 10 % over processor + forward. Weights are random: speed does
not depend on their values.

Run: python benchmarks/bench_embedding.py [--n-images 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from _common import clip_tower, interleaved, machine
from PIL import Image


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    args = parser.parse_args()

    from transformers import AutoProcessor, CLIPModel

    from skvlm import VLMEmbeddingTransformer

    path = clip_tower(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
        for _ in range(args.n_images)
    ]

    dtype = getattr(torch, args.dtype)
    model = CLIPModel.from_pretrained(path, dtype=dtype).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(path).image_processor
    bs = args.batch_size

    def bare():
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), bs):
                pixels = processor(images=images[i : i + bs], return_tensors="pt")
                pixels = pixels["pixel_values"].to(args.device, dtype)
                pooled = model.vision_model(pixel_values=pixels).pooler_output
                out.append(pooled.float().cpu().numpy())  # .cpu() synchronises cuda
        return np.concatenate(out)

    vlm = VLMEmbeddingTransformer(
        path, pooling="pooler", batch_size=bs, device=args.device, dtype=args.dtype
    ).fit(None)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    np.testing.assert_allclose(vlm.transform(images[:4]), bare()[:4], atol=tolerance)

    times = interleaved(
        {"bare HF loop": bare, "skvlm": lambda: vlm.transform(images)}, args.repeats
    )
    ratio = times["skvlm"] / times["bare HF loop"]
    print(f"machine: {machine()}")
    print(
        f"CLIP ViT-B/32 vision tower (random weights), {args.n_images} images 224x224, batch {bs}"
    )
    for name, seconds in times.items():
        print(
            f"  {name:>13}: {seconds:7.2f} s  {args.n_images / seconds:7.1f} images/s"
        )
    print(f"  ratio skvlm / bare = {ratio:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
