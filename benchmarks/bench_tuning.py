"""VLMClassificationTuner's training steps vs a bare transformers + peft loop.

A model with LLaVA-1.5's architecture and random weights (speed does not depend
on the weights' values), sized by ``--size``:

- ``cpu``: a CLIP tower of width 384 with 6 blocks (224 px, patch 32: 49 image
  tokens), LLaVA's MLP projector and a 6-block Llama of width 512;
- ``7b``: LLaVA-1.5-7B's shapes: CLIP ViT-L/14-336 (24 blocks, 576 image
  tokens) and a 32-block Llama of width 4096. Only for a GPU.

Both have a 32064-token vocabulary, as LLaVA-1.5. Measured side by side in one run:

1. **Steps per second** of LoRA training (rank ``--lora-rank`` on every linear
   layer of the language model's blocks, the projector trained in full, the
   generation objective, AdamW with warm-up + cosine, gradient clipping):
   ``VLMClassificationTuner.fit`` against what a user writes with transformers and
   peft alone (processor on prompt + answer, labels with the prompt masked, the
   model's own ``labels=`` loss). Same images, batch, dtype, LoRA settings and
   threads. Every step counts its data preparation; the first step is left out
   (warm-up). Median per-step time over ``--repeats`` interleaved runs. The
   tuner's steps are stamped by a callback (``on_step_end``).
2. **Tokens per second**: rows x tokens per row (image tokens included) / step time.
3. **Peak memory** of the training steps with and without gradient checkpointing
   (and of the bare loop), each contender in a fresh process, measured from the
   end of its first step (weights, optimizer state and allocator in their steady
   state) to the end of the last: the peak minus what was in use at the start.
   On CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated``. On
   the CPU, which has no allocator statistics: the peak resident size
   (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident size,
   with glibc told to map every block above 64 KiB on its own and to give freed
   memory back at once (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``),
   so that the resident size follows the memory in use.

Run: ``python benchmarks/bench_tuning.py`` (CPU, a few minutes on 2 cores);
``benchmarks/gpu_tuning.sh`` for the 7B-sized run on a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from _common import machine
from PIL import Image

PROMPT = "What type of object is in this photo?"
TEMPLATE = "The photo features a {}."
NAMES = [
    "cat",
    "dog",
    "car",
    "bird",
    "flower",
    "plane",
    "ship",
    "truck",
    "frog",
    "horse",
]
SIZES = {
    "cpu": dict(
        vision=dict(
            hidden_size=384,
            intermediate_size=1536,
            num_hidden_layers=6,
            num_attention_heads=6,
            image_size=224,
            patch_size=32,
        ),
        text=dict(
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=6,
            num_attention_heads=8,
            num_key_value_heads=8,
        ),
    ),
    "7b": dict(
        vision=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
        ),
        text=dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
        ),
    ),
}
VOCAB = 32064
LORA_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


class _Done(Exception):
    """Raised after the last timed step: the fit stops before saving anything."""


# -- the model -------------------------------------------------------------------------
def build_llava(path, size, device, dtype):
    """Save a LLaVA-1.5-architecture model with random weights to ``path``."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from skvlm.testing import make_tokenizer
    from skvlm.testing._generative import LLAVA_TEMPLATE

    shapes = SIZES[size]
    image = shapes["vision"]["image_size"]
    tokenizer = make_tokenizer(
        ["<image>"],
        extra_words=["USER", "ASSISTANT", "What", "The", *NAMES],
        padding_side="left",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image}, crop_size={"height": image, "width": image}
        ),
        tokenizer=tokenizer,
        patch_size=shapes["vision"]["patch_size"],
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=dict(shapes["vision"], model_type="clip_vision_model"),
        text_config=dict(
            shapes["text"],
            model_type="llama",
            max_position_embeddings=4096,
            vocab_size=VOCAB,  # LLaVA-1.5's; the extra rows are never used here
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    gc.collect()
    return path


def make_data(n, size):
    side = SIZES[size]["vision"]["image_size"]
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        for _ in range(n)
    ]
    return images, np.array([NAMES[i % len(NAMES)] for i in range(n)])


# -- the contenders --------------------------------------------------------------------
def tuner_steps(
    path, images, labels, args, *, gradient_checkpointing=False, on_step=None
):
    """Per-step seconds of VLMClassificationTuner.fit (the first step excluded).

    The fit stops after its last step, before writing the tuned model: only the
    training steps are timed.
    """
    from skvlm.tuning import VLMClassificationTuner

    stamps = []
    n_steps = len(images) // args.batch_size

    class Clock:
        def on_step_end(self, estimator, *, step, **info):
            sync(args.device)
            stamps.append((time.perf_counter(), time.process_time()))
            if on_step is not None:
                on_step(step)
            if step == n_steps:
                raise _Done

    tuner = VLMClassificationTuner(
        path,
        learning_rate_init=2e-4,
        lora__r=args.lora_rank,
        lora__lora_alpha=2 * args.lora_rank,
        max_iter=1,
        batch_size=args.batch_size,
        gradient_checkpointing=gradient_checkpointing,
        output_dir=args.out,
        resume=False,
        random_state=0,
        device=args.device,
        dtype=args.dtype,
        verbose=0,
        callbacks=[Clock()],
    )
    try:
        tuner.fit(images, labels)
    except _Done:
        pass
    return np.diff(np.array(stamps), axis=0).tolist()


def bare_loop(path, args):
    """What a user writes with transformers and peft alone. Returns a step runner."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoProcessor,
        LlavaForConditionalGeneration,
        get_cosine_schedule_with_warmup,
    )

    dtype = getattr(torch, args.dtype)
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
    model = model.to(args.device)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "right"
    model.requires_grad_(False)
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lora_dropout=0.05,
        target_modules=r".*language_model.*\.(" + "|".join(LORA_MODULES) + ")",
    )
    model = get_peft_model(model, config)
    for param in model.base_model.model.model.multi_modal_projector.parameters():
        param.data = param.data.float()
        param.requires_grad_(True)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=2e-4, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, 1, 1000)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": PROMPT}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    eos = processor.tokenizer.eos_token
    autocast = dtype != torch.float32
    model.train()

    def step(images, labels):
        answers = [TEMPLATE.format(name) for name in labels]
        batch = processor(
            images=images,
            text=[prompt + a + eos for a in answers],
            return_tensors="pt",
            padding=True,
        ).to(args.device)
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        n_answer = [
            len(processor.tokenizer(a + eos, add_special_tokens=False)["input_ids"])
            for a in answers
        ]
        target = torch.full_like(batch["input_ids"], -100)
        ends = batch["attention_mask"].sum(1)
        for i, (end, n) in enumerate(zip(ends.tolist(), n_answer, strict=True)):
            target[i, end - n : end] = batch["input_ids"][i, end - n : end]
        with torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=autocast):
            loss = model(**batch, labels=target).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def bare_steps(step, images, labels, args):
    """Per-step (wall, CPU) seconds of the bare loop (the first step excluded)."""
    stamps = []
    bs = args.batch_size
    for start in range(0, len(images), bs):
        step(images[start : start + bs], labels[start : start + bs])
        sync(args.device)
        stamps.append((time.perf_counter(), time.process_time()))
    return np.diff(np.array(stamps), axis=0).tolist()


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def tokens_per_row(path, images, labels, args):
    """Tokens of one training row (image tokens included), as the tuner builds it."""
    from skvlm.models import load_adapter
    from skvlm.tuning._batches import answer_ids, generation_batch

    adapter = load_adapter(path, device=args.device, dtype=args.dtype)
    answers = answer_ids(adapter.processor.tokenizer, [TEMPLATE.format(labels[0])])
    batch = generation_batch(
        adapter, images[:1], [adapter.format_prompt(PROMPT)], answers
    )
    return batch.inputs["input_ids"].shape[1]


# -- peak memory ---------------------------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def memory_child(args):
    """One contender in this fresh process; prints its peak growth as JSON."""
    images, labels = make_data(args.batch_size * args.steps, args.size)
    cuda = str(args.device).startswith("cuda")
    before = {}

    def mark():
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before["bytes"] = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before["bytes"] = _status_kb("VmRSS") * 1024

    def peak():
        if cuda:
            return torch.cuda.max_memory_allocated() - before["bytes"]
        return _status_kb("VmHWM") * 1024 - before["bytes"]

    if args.memory_child == "bare":
        step = bare_loop(args.path, args)
        step(images[: args.batch_size], labels[: args.batch_size])  # a first step
        mark()
        bare_steps(step, images, labels, args)
    else:
        # the peak is reset once the copy exists and the first step has run
        tuner_steps(
            args.path,
            images,
            labels,
            args,
            gradient_checkpointing=args.memory_child == "tuner+gc",
            on_step=lambda step: mark() if step == 1 else None,
        )
    print(json.dumps({"peak_bytes": peak()}))


def measure_memory(path, args):
    results = {}
    for contender in ("tuner", "tuner+gc", "bare"):
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            contender,
            "--path",
            path,
            "--size",
            args.size,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--batch-size",
            str(args.batch_size),
            "--steps",
            str(args.steps),
            "--lora-rank",
            str(args.lora_rank),
            "--threads",
            str(torch.get_num_threads()),
            "--out",
            args.out,
        ]
        # glibc: tensors above 64 KiB in their own mappings, unmapped when freed,
        # so the resident size follows live memory and its peak is the step's
        env = {
            **os.environ,
            "MALLOC_MMAP_THRESHOLD_": "65536",
            "MALLOC_TRIM_THRESHOLD_": "0",
        }
        proc = subprocess.run(
            command, capture_output=True, text=True, check=True, env=env
        )
        results[contender] = json.loads(proc.stdout.strip().splitlines()[-1])[
            "peak_bytes"
        ]
    return results


# -- the run ---------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps + 1 per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-dir", default=None, help="where the random model goes")
    parser.add_argument("--memory-child", default=None)
    parser.add_argument("--path", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    with tempfile.TemporaryDirectory(dir=args.model_dir) as tmp:
        args.out = os.path.join(tmp, "runs")
        dtype = getattr(torch, args.dtype)
        path = build_llava(os.path.join(tmp, "model"), args.size, args.device, dtype)
        run(args, path)


def run(args, path):
    start_wall = time.perf_counter()
    load = os.getloadavg()[0]
    images, labels = make_data(args.batch_size * args.steps, args.size)
    step = bare_loop(path, args)
    tuner_times, gc_times, bare_times = [], [], []
    for _ in range(args.repeats):  # interleaved
        tuner_times += tuner_steps(path, images, labels, args)
        gc_times += tuner_steps(path, images, labels, args, gradient_checkpointing=True)
        bare_times += bare_steps(step, images, labels, args)
    tokens = tokens_per_row(path, images, labels, args)
    medians = {
        name: (
            statistics.median(t for t, _ in times),
            statistics.median(c for _, c in times),
        )
        for name, times in (
            ("bare transformers + peft", bare_times),
            ("VLMClassificationTuner", tuner_times),
            ("tuner, grad. checkpointing", gc_times),
        )
    }
    rows = args.batch_size
    print(f"machine: {machine()}")
    print(
        f"LLaVA-1.5 architecture ({args.size}), random weights; {args.dtype} on "
        f"{args.device}; LoRA rank {args.lora_rank} + projector; batch {rows}; "
        f"{tokens} tokens per row; median of {len(tuner_times)} steps per contender, "
        f"{args.repeats} interleaved runs; load average {load:.1f} at the start"
    )
    print("\n1-2. training steps")
    for name, (t, c) in medians.items():
        print(
            f"  {name:>26}: {t:7.3f} s/step  {1 / t:7.3f} steps/s  "
            f"{rows / t:7.2f} samples/s  {rows * tokens / t:9.1f} tokens/s   "
            f"CPU {c:7.3f} s/step"
        )
    t_bare, c_bare = medians["bare transformers + peft"]
    t_tuner, c_tuner = medians["VLMClassificationTuner"]
    t_gc, _ = medians["tuner, grad. checkpointing"]
    print(
        f"  ratio tuner / bare (steps/s) = {t_bare / t_tuner:.3f} wall, "
        f"{c_bare / c_tuner:.3f} CPU  (target >= 0.9)"
    )
    print(
        f"  gradient checkpointing takes {t_gc / t_tuner:.2f} x the tuner's step time"
    )
    if not args.no_memory:
        del step
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        mem = measure_memory(path, args)
        print(
            "\n3. peak memory over the training steps (MiB above what was allocated before)"
        )
        for name, label in (
            ("bare", "bare transformers + peft"),
            ("tuner", "tuner"),
            ("tuner+gc", "tuner, gradient checkpointing"),
        ):
            print(f"  {label:>30}: {mem[name] / 2**20:9.1f} MiB")
        print(
            f"  gradient checkpointing keeps {mem['tuner+gc'] / mem['tuner']:.2f} of the "
            "tuner's peak"
        )
    print(
        f"\nwall time {time.perf_counter() - start_wall:.0f} s; load average now "
        f"{os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
