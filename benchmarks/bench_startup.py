"""Start-up time: ``import skvlm`` and ``skvlm --help`` against sklearn, side by side.

Each command runs in a fresh interpreter (a subprocess), interleaved with the
others for ``--repeats`` rounds after one discarded warm-up round (which fills
the OS file cache), and the median wall time is printed with its ratio to
``import sklearn.linear_model``. ``from skvlm import *`` imports every public
name, torch and transformers included: it is what ``import skvlm`` cost before
the package imported its names lazily, and what a script that builds an
estimator still pays once.

``--compare-with DIR`` adds ``import skvlm`` and ``skvlm --help`` from another
checkout of skvlm (e.g. ``git worktree add /tmp/old <commit>``), run side by
side with the others.

Run: python benchmarks/bench_startup.py [--repeats 7] [--compare-with DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
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
NEUTRAL = tempfile.gettempdir()


def _time(command, env=None):
    # From a neutral folder: a checkout in the working directory would shadow
    # PYTHONPATH (sys.path starts with it for -c and -m).
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=NEUTRAL)
    return time.perf_counter() - start


def main(repeats, compare_with=None):
    print(machine())
    print(f"load average before: {os.getloadavg()}")
    commands = {name: (command, None) for name, command in COMMANDS.items()}
    if compare_with is not None:
        other = dict(os.environ, PYTHONPATH=str(Path(compare_with).resolve()))
        commands["import skvlm (other checkout)"] = (COMMANDS["import skvlm"], other)
        commands["skvlm --help (other checkout)"] = (
            [PYTHON, "-m", "skvlm", "--help"],
            other,
        )
    for command, env in commands.values():  # warm-up: file cache, .pyc files
        _time(command, env)
    times = {name: [] for name in commands}
    for _ in range(repeats):
        for name, (command, env) in commands.items():
            times[name].append(_time(command, env))
    print(f"load average after:  {os.getloadavg()}")
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nmedian of {repeats} fresh interpreters, interleaved")
    print(f"{'command':<31} {'seconds':>8} {'vs sklearn':>10}")
    for name, seconds in median.items():
        print(f"{name:<31} {seconds:>8.3f} {seconds / median[REFERENCE]:>10.2f}")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compare-with", default=None, metavar="DIR")
    args = parser.parse_args()
    main(args.repeats, args.compare_with)
