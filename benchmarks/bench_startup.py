"""Start-up time: ``import skvlm`` and ``skvlm --help`` against sklearn, side by side.

Each command runs in a fresh interpreter (a subprocess), interleaved with the
others for ``--repeats`` rounds after one discarded warm-up round (which fills
the OS file cache), and the median wall time is printed with its ratio to
``import sklearn.linear_model``. ``from skvlm import *`` imports every public
name, torch and transformers included: it is what ``import skvlm`` cost before
the package imported its names lazily, and what a script that builds an
estimator still pays once.

Run: python benchmarks/bench_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

PYTHON = sys.executable
SCRIPT = Path(PYTHON).with_name("skvlm")
HELP = [str(SCRIPT), "--help"] if SCRIPT.exists() else [PYTHON, "-m", "skvlm", "--help"]

COMMANDS = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "import sklearn.linear_model": [PYTHON, "-c", "import sklearn.linear_model"],
    "import skvlm": [PYTHON, "-c", "import skvlm"],
    "skvlm --help": HELP,
    "from skvlm import * (eager)": [PYTHON, "-c", "from skvlm import *"],
}
REFERENCE = "import sklearn.linear_model"


def _time(command):
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(repeats):
    print(machine())
    print(f"load average before: {os.getloadavg()}")
    for command in COMMANDS.values():  # warm-up: file cache, .pyc files
        _time(command)
    times = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            times[name].append(_time(command))
    print(f"load average after:  {os.getloadavg()}")
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedian of {repeats} fresh interpreters, interleaved")
    print(f"{'command':<30} {'seconds':>8} {'vs sklearn':>10}")
    for name, seconds in median.items():
        print(f"{name:<30} {seconds:>8.3f} {seconds / median[REFERENCE]:>10.2f}")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    main(parser.parse_args().repeats)
