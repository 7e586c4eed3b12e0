"""A tuner fit in one process of a test's run (plain python or torchrun).

The distributed tests start it as a user's script is started; the main process
writes what the test compares (model path, history) to ``--result``.
``--kill-at k`` sends SIGKILL to the main process after step k (a crash
nothing can catch).
"""

import argparse
import json
import os
import signal

import numpy as np
import torch

from skvlm.testing import random_images
from skvlm.tuning import VLMClassificationTuner


class KillAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, estimator, *, step, **info):
        if step == self.step and estimator.is_main_process_:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--mixed-precision", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = random_images(8, seed=3)
    y = np.array(["cat", "dog"] * 4)
    tuner = VLMClassificationTuner(
        "skvlm/tiny-llava",
        learning_rate_init=1e-2,
        max_iter=2,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        lora__r=4,
        lora__lora_dropout=args.dropout,
        checkpoint_every=args.checkpoint_every,
        callbacks=[KillAt(args.kill_at)] if args.kill_at else None,
        **(
            {"accelerator__mixed_precision": args.mixed_precision}
            if args.mixed_precision
            else {}
        ),
        output_dir=args.out,
        random_state=0,
        device="cpu",
        verbose=0,
    )
    tuner.fit(images, y)
    if tuner.is_main_process_:
        result = {
            "model_path": tuner.model_path_,
            "history": tuner.history_,
            "n_processes": tuner.n_processes_,
        }
        with open(args.result, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
