"""Training on several processes (torchrun, gloo on this CPU) and resuming after kill -9.

Each run is a fresh process started as a user's script is: plain ``python`` for
one process, ``python -m torch.distributed.run --nproc_per_node 2`` for two.
The shipped tiny LLaVA trains 2 epochs of 8 images, a few steps.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("_fit_worker.py")
ROOT = Path(__file__).parents[2]


def _run(tmp, name, n_processes=1, expect_kill=False, **options):
    out = tmp / "runs" / name.split("#")[0]  # "#" marks a second run into one dir
    result = tmp / f"{name}.json"
    args = [str(WORKER), "--out", str(out), "--result", str(result)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    launcher = [sys.executable]
    if n_processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(n_processes)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    proc = subprocess.run(
        launcher + args, capture_output=True, text=True, env=env, timeout=300
    )
    if expect_kill:
        assert proc.returncode != 0, proc.stdout + proc.stderr
        assert not result.exists()
        return None
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(result.read_text())
    run["weights"] = load_file(Path(run["model_path"]) / "model.safetensors")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs shared by the tests, each started on first use."""
    tmp = tmp_path_factory.mktemp("distributed")
    done = {}

    def get(name, **options):
        if name not in done:
            done[name] = _run(tmp, name, **options)
        return done[name]

    get.tmp = tmp
    return get


def _assert_close(a, b, **tolerance):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tolerance, msg=name)


def _changed(run, base):
    return [n for n in base if not torch.equal(run["weights"][n], base[n])]


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one(runs):
    one = runs("one", batch_size=4)
    two = runs("two", n_processes=2, batch_size=4)
    assert two["n_processes"] == 2 and one["n_processes"] == 1
    assert len(two["history"]) == len(one["history"]) == 4
    # the same losses (summed over the processes) and weights, to float32 rounding
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["lr"] == b["lr"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    _assert_close(one["weights"], two["weights"], rtol=1e-5, atol=1e-6)
    base = load_file(_shipped_weights())
    assert _changed(two, base)  # it trained


@pytest.mark.slow
def test_two_processes_with_accumulation_two_train_the_weights_of_batch_twice(runs):
    one = runs("one", batch_size=4)
    accumulated = runs("two_acc", n_processes=2, batch_size=2, accumulation=2)
    assert len(accumulated["history"]) == len(one["history"])
    _assert_close(one["weights"], accumulated["weights"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("n_processes", [1, 2])
def test_kill_9_then_resume_equals_the_uninterrupted_run_bit_for_bit(runs, n_processes):
    common = dict(n_processes=n_processes, batch_size=2, dropout=0.3)
    whole = runs(f"whole{n_processes}", checkpoint_every=3, **common)
    name = f"crashed{n_processes}"
    runs(name, expect_kill=True, checkpoint_every=3, kill_at=5, **common)
    run_dir = next((runs.tmp / "runs" / name).glob("run-*"))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["step"] == 3
    assert len(checkpoint["rng"]) == n_processes  # every process's generators
    resumed = runs(f"{name}#resumed", checkpoint_every=3, **common)
    assert resumed["model_path"] == str(run_dir)
    assert resumed["history"] == whole["history"]
    assert resumed["weights"].keys() == whole["weights"].keys()
    for key, value in whole["weights"].items():
        assert torch.equal(resumed["weights"][key], value), key
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_bf16_mixed_precision_through_accelerate(runs):
    full = runs("one", batch_size=4)
    mixed = runs("bf16", batch_size=4, mixed_precision="bf16")
    # autocast: bfloat16 rounding moves the losses a little, not more
    losses = [h["loss"] for h in mixed["history"]]
    assert losses != [h["loss"] for h in full["history"]]
    assert losses == pytest.approx([h["loss"] for h in full["history"]], rel=0.05)
    # the weights train and are kept (and saved) in float32
    assert {t.dtype for t in mixed["weights"].values()} == {torch.float32}
    assert _changed(mixed, load_file(_shipped_weights()))


def _shipped_weights():
    from skvlm.models import load_adapter

    adapter = load_adapter("skvlm/tiny-llava", device="cpu")
    return Path(adapter.model.name_or_path) / "model.safetensors"


@pytest.mark.slow
def test_the_documented_example_runs_under_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(ROOT / "scripts" / "tune_distributed.py")]
    command += ["--epochs", "1", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "trained on 2 processes, 4 steps" in lines  # 32 images, batch 8
    assert sum(line.startswith("tuned model: ") for line in lines) == 1  # rank 0
