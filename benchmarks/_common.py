"""Helpers shared by the benchmark scripts: machine description and timing."""

from __future__ import annotations

import os
import platform
import statistics
import time


def machine():
    """One line naming the machine, for the docs."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def interleaved(runs, repeats):
    """Time each callable ``repeats`` times, interleaved, and return median seconds.

    Interleaving spreads the noise of a shared machine evenly over the contenders.
    """
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def clip_tower(path, *, hidden=768, layers=12, heads=12, image=224, patch=32):
    """A CLIP model of the given vision size (random weights) saved at ``path``.

    The defaults are ViT-B/32's vision tower; the text tower is a token one
    (the benchmarks time images). Speed does not depend on the weights' values.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from skvlm.testing import make_tokenizer

    config = CLIPConfig(
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=image,
            patch_size=patch,
        ),
        text_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=4,
            vocab_size=128,
            max_position_embeddings=77,
        ),
        projection_dim=64,
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(path)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": image}, crop_size={"height": image, "width": image}
    )
    CLIPProcessor(processor, make_tokenizer()).save_pretrained(path)
    return path
