"""Run directories: one per (base model, training parameters, data, seed).

A fit writes into ``output_dir/run-<key>``, where the key hashes everything that
decides the trained weights. Clones in a grid search therefore never share a
directory, and a fit that crashed finds its own checkpoint when it is run again.
A finished run holds the tuned model in ``save_pretrained`` layout and a
manifest, ``skvlm_tuning.json``, written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

MANIFEST = "skvlm_tuning.json"
LOCK = ".lock"


def default_root():
    """Where runs go when ``output_dir=None``."""
    return os.path.join(tempfile.gettempdir(), "skvlm-tuning")


def plain(value):
    """``value`` as JSON: mappings become sorted [key, value] pairs (keys of any
    type), numpy scalars and arrays Python numbers and lists, the rest ``repr``.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.tuning._run import plain
    >>> plain({np.int64(1): "one", "a": (2.5, None)})
    [['a', [2.5, None]], [1, 'one']]
    """
    if isinstance(value, dict) or hasattr(value, "items"):
        pairs = [[plain(k), plain(v)] for k, v in value.items()]
        return sorted(pairs, key=lambda kv: json.dumps(kv[0], sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


def run_key(parts):
    """A 16-hex-digit key of a description of the run."""
    text = json.dumps(plain(parts), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def read_manifest(run_dir):
    """The manifest of a finished run, or None."""
    path = os.path.join(run_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_manifest(run_dir, manifest):
    path = os.path.join(run_dir, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, default=repr)
        f.write("\n")
    os.replace(tmp, path)


def clear_run(run_dir):
    """Remove a run's files (the directory stays)."""
    for entry in Path(run_dir).iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def save_model(run_dir, net, processor, state_dict=None):
    """Write the model (``state_dict`` when given) and processor in
    ``save_pretrained`` layout, atomically per file."""
    staging = Path(run_dir) / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    net.save_pretrained(staging, state_dict=state_dict)
    processor.save_pretrained(staging)
    for file in staging.iterdir():
        os.replace(file, Path(run_dir) / file.name)
    staging.rmdir()


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold ``run_dir`` for this process; a lock left by a dead process is taken over."""
    path = os.path.join(run_dir, LOCK)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _alive(holder, me):
                raise RuntimeError(
                    f"Another process (pid {holder['pid']} on {holder['host']}) is "
                    f"training the same run in {run_dir}. Wait for it to finish, or "
                    "fit with another output_dir."
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _holder(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _alive(holder, me):
    if holder.get("host") != me["host"]:
        return True  # cannot tell; assume it runs
    pid = holder.get("pid")
    if pid == me["pid"]:
        return True  # a second fit of the same run in this process
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
