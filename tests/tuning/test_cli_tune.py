"""``skvlm tune``: fine-tune, write the model and the before/after report."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.cli import main
from skvlm.datasets import load_digit_images

# Five digits keep their names; five get words the shipped model never produced.
NAMES = "zero,one,two,three,four,cat,dog,bird,car,frog"


@pytest.mark.slow
def test_tune_writes_the_model_and_the_report(tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "--n-per-class", "8", "--variation", "0", "--class-names", NAMES]
    args += ["--learning-rate", "3e-3", "--epochs", "2", "--lora-rank", "16"]
    args += ["--strategies", "probabilistic,open_ended", "--max-new-tokens", "8"]
    args += ["--cv", "2", "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert files == [
        "accuracy.csv",
        "per_class.csv",
        "probes.csv",
        "report.html",
        "report.json",
        "tuning.png",
    ]
    accuracy = pd.read_csv(out / "accuracy.csv")
    assert sorted(accuracy["strategy"].unique()) == ["open_ended", "probabilistic"]
    assert set(accuracy["model"]) == {"base", "tuned"}
    per_class = pd.read_csv(out / "per_class.csv")
    assert set(per_class["class"]) == set(NAMES.split(","))
    probes = pd.read_csv(out / "probes.csv")
    assert probes.groupby("model")["layer"].apply(list).to_dict() == {
        "base": [0, 1, 2, 3],
        "tuned": [0, 1, 2, 3],
    }
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["n_test"] == 20 and meta["n_train"] == 60
    printed = capsys.readouterr().out
    assert printed.startswith("accuracy on held-out images")
    assert "tuned model: " in printed
    # the tuned model the command names is a model for every skvlm tool
    path = meta["tuned"]
    assert f"tuned model: {path}" in printed
    digits = load_digit_images(n_per_class=1)
    clf = VLMGenerativeClassifier(path, class_names=NAMES.split(","), device="cpu")
    assert clf.fit(digits.images, digits.target).predict(digits.images).shape == (10,)
    assert (
        main(
            [
                "probe",
                "--model",
                path,
                "--n-per-class",
                "2",
                "--stage",
                "language",
                "--layers",
                "-1",
                "--cv",
                "2",
                "--quiet",
                "--out",
                str(tmp_path / "probe"),
            ]
        )
        == 0
    )


def test_tune_refuses_a_wrong_number_of_class_names(tmp_path, capsys):
    status = main(
        [
            "tune",
            "--n-per-class",
            "2",
            "--class-names",
            "a,b",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 1
    assert "--class-names gives 2 names for 10 classes" in capsys.readouterr().err


def test_importing_the_tuner_and_tune_help_load_no_model_library():
    code = (
        "import contextlib, io, json, sys\n"
        "import skvlm.tuning\n"
        "from skvlm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['tune', '--help']) == 0\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'peft')"
        " if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_tune_with_no_arguments_shows_the_fix(tmp_path, monkeypatch, capsys):
    # The demo: the shipped tiny LLaVA tuned on the embedded digits beats the
    # base model on every strategy the report shows, on the held-out images.
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = printed.split("\n\n")[0].splitlines()
    assert table[0] == "accuracy on held-out images"
    rows = {line.split()[0]: line.split()[1:] for line in table[3:]}
    assert sorted(rows) == ["closed_set", "open_ended", "probabilistic"]
    for strategy, (base, tuned) in rows.items():
        assert float(tuned) > float(base) + 0.1, (strategy, base, tuned)
    accuracy = pd.read_csv(tmp_path / "skvlm-tune" / "accuracy.csv")
    meta = json.loads((tmp_path / "skvlm-tune" / "report.json").read_text())["meta"]
    assert meta["n_test"] == 125 and meta["n_train"] == 375
    wide = accuracy.pivot(index="strategy", columns="model", values="accuracy")
    assert (wide["tuned"] > wide["base"]).all()
