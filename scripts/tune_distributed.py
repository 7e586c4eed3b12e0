"""Fine-tune a VLM on several processes: the same script on 1, 2 or 8 of them.

Run it as written on a CPU (two processes, gloo, the shipped tiny LLaVA and the
embedded digit images, about a minute):

    torchrun --nproc_per_node 2 scripts/tune_distributed.py

On one node of 8 GPUs, on your own images (one sub-folder per class) and the
paper's model and recipe:

    accelerate launch --num_processes 8 --mixed_precision bf16 \\
        scripts/tune_distributed.py --model llava-hf/llava-1.5-7b-hf \\
        --images /data/imagenet/train --paper --batch-size 128 --out runs/

Every process runs the same ``fit``: each takes its share of every batch
(``--batch-size`` is the global batch, whatever the number of processes),
gradients are synchronised, and only the main process writes the tuned model
and prints. Interrupted (even by ``kill -9``), the same command resumes from
the last checkpoint. See the user guide's "Fine-tuning at scale".
"""

from __future__ import annotations

import argparse

from skvlm.datasets import load_digit_images, load_image_folder
from skvlm.tuning import VLMClassificationTuner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="skvlm/tiny-llava")
    parser.add_argument("--images", default=None, help="a folder of class folders")
    parser.add_argument("--paper", action="store_true", help="the paper's recipe")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="tuning-runs")
    args = parser.parse_args(argv)

    if args.images is None:
        data = load_digit_images(n_class=4, n_per_class=8)
    else:
        data = load_image_folder(args.images)
    names = list(data.target_names)
    common = dict(
        max_iter=args.epochs,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        output_dir=args.out,
        random_state=0,
        device=args.device,
    )
    if args.paper:
        tuner = VLMClassificationTuner.paper_preset(args.model, names, **common)
    else:
        tuner = VLMClassificationTuner(
            args.model, class_names=names, learning_rate_init=3e-3, **common
        )
    tuner.fit(data.data, data.target)
    if tuner.is_main_process_:  # one process writes and reports
        losses = [round(h["loss"], 4) for h in tuner.history_]
        print(f"trained on {tuner.n_processes_} processes, {tuner.n_steps_} steps")
        print(f"losses: {losses}")
        print(f"tuned model: {tuner.model_path_}")


if __name__ == "__main__":
    main()
