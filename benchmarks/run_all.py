"""Run every benchmark script in this folder, one after another, with its defaults.

Each script prints ratios measured side by side in one run; copy them, with the
machine line, into the matching page under docs/benchmarks/. Some take tens of
minutes on a 2-core CPU: pass script names to run a subset, e.g.
``python benchmarks/run_all.py bench_embedding bench_store_search``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names):
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        wanted = {n.removesuffix(".py") for n in names}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            sys.exit(
                f"unknown benchmarks {sorted(unknown)}; known: {[s.stem for s in scripts]}"
            )
        scripts = [s for s in scripts if s.stem in wanted]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.run([sys.executable, script.name], cwd=HERE).returncode:
            failed.append(script.name)
    if failed:
        sys.exit(f"failed: {failed}")


if __name__ == "__main__":
    main(sys.argv[1:])
