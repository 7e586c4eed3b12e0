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
