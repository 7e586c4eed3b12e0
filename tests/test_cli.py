"""The skvlm command: exit codes, report files, one-line errors, --debug."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from skvlm.cli import main
from skvlm.datasets import load_digit_images


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three classes of digit PNGs, four each, in class subfolders."""
    root = tmp_path_factory.mktemp("folder")
    digits = load_digit_images(n_class=3, n_per_class=4)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / digits.target_names[label]
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{i}.png")
    return root


def _small(clip_path):
    return ["--model", str(clip_path), "--n-per-class", "3", "--quiet"]


def test_probe_writes_the_report_folder(clip_path, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["probe", *_small(clip_path), "--stage", "vision", "--layers", "0,-1"]
    status = main([*args, "--pooling", "cls,mean", "--cv", "3", "--out", str(out)])
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["probe_layers.png", "report.html", "results.csv", "results.json"]
    table = pd.read_csv(out / "results.csv")
    assert table[["layer", "pooling"]].to_numpy().tolist() == [
        [0, "cls"],
        [0, "mean"],
        [3, "cls"],
        [3, "mean"],
    ]
    assert json.loads((out / "results.json").read_text())["meta"]["n_samples"] == 30
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0].split() == ["stage", "layer", "pooling", "score"]
    assert "best: vision layer" in printed.out
    assert printed.err == ""  # --quiet: no progress bars, no chatter


def test_probe_with_no_arguments_runs_on_the_embedded_model(tmp_path, monkeypatch):
    # The make-demo path, made small: the embedded LLaVA, every stage and site.
    monkeypatch.chdir(tmp_path)
    assert main(["probe", "--n-per-class", "2", "--cv", "2", "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "skvlm-report" / "results.csv")
    assert list(dict.fromkeys(table["stage"])) == ["vision", "projector", "language"]


def test_probe_reads_a_folder_and_a_csv(clip_path, image_folder, tmp_path):
    common = ["--model", str(clip_path), "--quiet", "--layers", "-1", "--cv", "2"]
    assert (
        main(
            [
                "probe",
                *common,
                "--data",
                str(image_folder),
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    rows = [
        {"image": str(p.relative_to(image_folder)), "label": p.parent.name}
        for p in sorted(image_folder.glob("*/*.png"))
    ]
    manifest = image_folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    out = tmp_path / "b"
    assert main(["probe", *common, "--data", str(manifest), "--out", str(out)]) == 0
    assert (out / "report.html").exists()


def test_zero_shot_and_importance(clip_path, tmp_path, capsys):
    assert main(["zero-shot", *_small(clip_path), "--template", "digit {}"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot accuracy:" in out and "nine" in out
    folder = tmp_path / "imp"
    args = ["importance", *_small(clip_path), "--top-k", "3", "--test-size", "0.5"]
    args += ["--out", str(folder)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "top 3 of 128 dimensions" in out
    layers = pd.read_csv(folder / "importance_layers.csv")
    assert layers["group"].tolist() == [f"vision_l{k}" for k in range(4)]
    assert len(pd.read_csv(folder / "importance_dims.csv")) == 128


@pytest.mark.parametrize(
    "args, match",
    [
        (["probe", "--data", "/no/such/place"], "does not exist"),
        (["probe", "--layers", "a,b"], "not a comma-separated list of ints"),
        (["probe", "--stage", "language"], "stage 'language' is not available"),
        (["zero-shot", "--class-names", "a,b"], "2 names for 10 classes"),
        (["zero-shot", "--template", "a photo"], "has no {} for the class name"),
    ],
)
def test_errors_are_one_line_without_traceback(clip_path, args, match, capsys):
    status = main([*args, "--model", str(clip_path), "--quiet", "--n-per-class", "1"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"skvlm {args[0]}: error: ")
    assert match in err and "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    assert main(["probe", "--data", "/no/such/place", "--debug", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("skvlm probe: error:")


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["probe", "--no-such-option"]) == 2
    assert main(["--help"]) == 0
    assert "probe" in capsys.readouterr().out


def test_python_dash_m_exit_status():
    result = subprocess.run(
        [sys.executable, "-m", "skvlm", "probe", "--data", "/no/such/place", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "skvlm probe: error: --data '/no/such/place' does not exist" in result.stderr
