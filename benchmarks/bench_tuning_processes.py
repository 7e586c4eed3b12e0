"""VLMClassificationTuner on 1 vs 2 processes on the CPU: steps/s and samples/s.

The same fit (LoRA rank 16 + projector, the generation objective, a global
batch of ``--batch-size`` rows per step) on the ``cpu``-sized LLaVA-1.5
architecture of ``bench_tuning.py`` (random weights), three ways:

- 1 process, 1 torch thread;
- 1 process, 2 torch threads (what one process gets out of 2 cores);
- 2 processes (``torchrun --nproc_per_node 2``, gloo), 1 thread each: each
  process takes half of every batch, gradients are all-reduced.

Each contender runs in fresh processes, ``--repeats`` times, interleaved; a
callback stamps the end of every optimizer step on the main process, the first
step is left out (warm-up), and the median step time is reported. On 2 cores,
2 processes can at best halve the step time of 1 process with 1 thread; the
all-reduce of the trained parameters (LoRA + projector, about 4 M float32
values here) and the shared memory bandwidth take their share.

Run: ``python benchmarks/bench_tuning_processes.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine

HERE = os.path.dirname(os.path.abspath(__file__))


class StepClock:
    """Stamps the end of each optimizer step (wall clock), main process only."""

    def __init__(self):
        self.stamps = []

    def on_step_end(self, estimator, **info):
        if estimator.is_main_process_:
            self.stamps.append(time.perf_counter())


def child(args):
    import torch
    from bench_tuning import make_data

    from skvlm.tuning import VLMClassificationTuner

    torch.set_num_threads(args.threads)
    images, labels = make_data(args.batch_size * args.steps, "cpu")
    clock = StepClock()
    tuner = VLMClassificationTuner(
        args.path,
        lora__r=16,
        lora__lora_alpha=32,
        max_iter=1,
        batch_size=args.batch_size,
        output_dir=args.out,
        resume=False,
        random_state=0,
        device="cpu",
        verbose=0,
        callbacks=[clock],
    )
    tuner.fit(images, labels)
    if tuner.is_main_process_:
        steps = [
            b - a for a, b in zip(clock.stamps[:-1], clock.stamps[1:], strict=True)
        ]
        print("RESULT " + json.dumps({"steps": steps, "n": tuner.n_processes_}))


def run_contender(path, out, n_processes, threads, args):
    command = [sys.executable]
    if n_processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", str(n_processes)]
    command += [os.path.join(HERE, "bench_tuning_processes.py"), "--child"]
    command += ["--path", path, "--out", out, "--threads", str(threads)]
    command += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=HERE, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-4000:])
    return json.loads(lines[-1][len("RESULT ") :])["steps"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--path")
    parser.add_argument("--out")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch
    from bench_tuning import build_llava

    contenders = {
        "1 process, 1 thread": (1, 1),
        "1 process, 2 threads": (1, 2),
        "2 processes, 1 thread each": (2, 1),
    }
    start_load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = build_llava(os.path.join(tmp, "model"), "cpu", "cpu", torch.float32)
        times = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name, (n, threads) in contenders.items():
                out = os.path.join(tmp, "runs")
                times[name] += run_contender(path, out, n, threads, args)
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print(
        f"LLaVA-1.5 architecture (cpu size), random weights, float32; LoRA rank 16 "
        f"+ projector; global batch {args.batch_size}; median of "
        f"{len(times['1 process, 1 thread'])} steps per contender over "
        f"{args.repeats} interleaved runs; load average {start_load:.1f} at the start"
    )
    base = statistics.median(times["1 process, 1 thread"])
    for name, values in times.items():
        t = statistics.median(values)
        print(
            f"  {name:>28}: {t:7.3f} s/step  {1 / t:6.3f} steps/s  "
            f"{args.batch_size / t:7.2f} samples/s  speed-up {base / t:5.2f}"
        )
    print(
        f"wall time {time.perf_counter() - start:.0f} s; load average now "
        f"{os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
