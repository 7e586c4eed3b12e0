"""The skvlm command: exit codes, report files, one-line errors, --debug."""

import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from skvlm.cli import _main, main
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
    assert table[["param_layer", "param_pooling"]].to_numpy().tolist() == [
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
    stages = list(dict.fromkeys(table["param_stage"]))
    assert stages == ["vision", "projector", "language"]


def test_probe_pooling_image_mean_probes_the_stage_that_has_it(tmp_path, monkeypatch):
    # Every stage is probed by default; image_mean exists at the language stage
    # only, and is probed there instead of failing at the vision stage.
    monkeypatch.chdir(tmp_path)
    args = ["probe", "--n-per-class", "2", "--cv", "2", "--quiet"]
    assert main([*args, "--pooling", "image_mean", "--layers", "0,-1"]) == 0
    table = pd.read_csv(tmp_path / "skvlm-report" / "results.csv")
    assert set(table["param_stage"]) == {"language"}
    assert set(table["param_pooling"]) == {"image_mean"}


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
    small = ["--n-per-class", "2"] + (["--cv", "2"] if args[0] == "probe" else [])
    status = main([*args, "--model", str(clip_path), "--quiet", *small])
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


# -- the CLI as a daily tool (issue 15, item 10) -------------------------------------------
@pytest.fixture
def folder_with_bad_files(tmp_path, image_folder):
    """The image folder plus an unreadable file and a truncated PNG."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(image_folder, root)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (first / "zz_notes.png").write_text("not an image")
    good = sorted(first.glob("*.png"))[0].read_bytes()
    (first / "zz_cut.png").write_bytes(good[: len(good) // 2])
    return root


def test_on_error_raise_names_the_file_and_the_command_line_fix(
    clip_path, folder_with_bad_files, capsys
):
    args = ["probe", "--model", str(clip_path), "--data", str(folder_with_bad_files)]
    assert main([*args, "--quiet", "--layers", "-1", "--cv", "2"]) == 1
    err = capsys.readouterr().err
    assert "zz_notes.png" in err and "--on-error skip" in err
    assert "on_error=" not in err  # no advice that only Python can follow
    assert main([*args, "--on-error", "nan"]) == 2  # probe cannot use NaN rows


def test_on_error_skip_leaves_unreadable_images_out(
    clip_path, folder_with_bad_files, tmp_path, capsys
):
    out = tmp_path / "report"
    args = ["probe", "--model", str(clip_path), "--data", str(folder_with_bad_files)]
    args += ["--quiet", "--layers", "-1", "--cv", "2", "--on-error", "skip"]
    assert main([*args, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    # said even with --quiet: leaving data out is never silent
    assert "Skipped 2 unreadable image file(s)" in err
    assert "zz_cut.png" in err and "zz_notes.png" in err
    assert json.loads((out / "results.json").read_text())["meta"]["n_samples"] == 12


def test_extract_writes_npy_and_parquet_with_nan_or_skip(
    clip_path, folder_with_bad_files, tmp_path, capsys
):
    np = pytest.importorskip("numpy")
    from skvlm import VLMEmbeddingTransformer
    from skvlm.datasets import load_image_folder

    common = ["extract", "--model", str(clip_path), "--data"]
    common += [str(folder_with_bad_files), "--quiet", "--pooling", "mean"]
    npy = tmp_path / "f.npy"
    assert main([*common, "--on-error", "nan", "--out", str(npy)]) == 0
    features = np.load(npy)
    rows = pd.read_csv(tmp_path / "f.rows.csv")
    assert len(rows) == len(features) == 14
    bad = rows["image"].str.endswith(("zz_notes.png", "zz_cut.png")).to_numpy()
    assert np.isnan(features[bad]).all() and np.isfinite(features[~bad]).all()
    assert "2 unreadable image(s) written as NaN rows" in capsys.readouterr().err
    # the features are the Python API's on the same files
    paths = load_image_folder(folder_with_bad_files, on_error="skip").data
    expected = VLMEmbeddingTransformer(clip_path, pooling="mean").fit_transform(
        [p for p in paths if not str(p).endswith("zz_cut.png")]
    )
    np.testing.assert_allclose(features[~bad], expected, rtol=1e-5, atol=1e-6)
    parquet = tmp_path / "f.parquet"
    args = [*common, "--on-error", "skip", "--layers", "0,-1", "--out", str(parquet)]
    assert main(args) == 0
    table = pd.read_parquet(parquet)
    assert len(table) == 12 and list(table.columns[:3]) == [
        "image",
        "label",
        "vision_l0_mean_0",
    ]
    assert table.shape[1] == 2 + 2 * 32
    assert main([*common, "--out", str(tmp_path / "f.txt")]) == 1
    assert "must end in .npy" in capsys.readouterr().err


def test_a_cached_rerun_says_the_images_came_from_the_store(
    clip_path, tmp_path, capsys
):
    args = ["extract", "--model", str(clip_path), "--n-per-class", "2"]
    args += ["--cache", str(tmp_path / "store"), "--out", str(tmp_path / "f.npy")]
    assert main(args) == 0
    first = capsys.readouterr().err
    assert "0 of 20 images came from the feature store" in first
    assert "20 ran through the model" in first
    assert main(args) == 0
    again = capsys.readouterr().err
    assert "All 20 images came from the feature store" in again
    assert "no forward pass ran" in again and "0batch" not in again


def test_importance_says_why_when_every_importance_is_zero(clip_path, tmp_path, capsys):
    # Two classes of the very same image: no feature can tell them apart.
    from skvlm.datasets import load_digit_images

    image = load_digit_images(n_class=1, n_per_class=1).images[0]
    for name in ["a", "b"]:
        (tmp_path / name).mkdir()
        for i in range(6):
            image.save(tmp_path / name / f"{i}.png")
    args = ["importance", "--model", str(clip_path), "--data", str(tmp_path)]
    assert main([*args, "--quiet", "--layers", "-1", "--test-size", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Every one of the 32 dimensions has importance 0" in out
    assert "predicts one class" in out and "top 10 of" not in out
    assert "by layer" in out


def test_sites_lists_what_a_model_offers(capsys):
    from skvlm.models import describe_sites

    assert main(["sites", "skvlm/tiny-llava"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "skvlm/tiny-llava (llava): 35 sites"
    assert lines[2].split()[:4] == ["vision", "0..3", "64", "cls"]
    assert "pooler (layer 3)" in lines[2] and "int positions -17..16" in lines[2]
    assert lines[4].split()[:4] == ["language", "0..3", "64", "last"]
    assert main(["sites", "skvlm/tiny-clip", "--format", "csv"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    pd.testing.assert_frame_equal(table, describe_sites("skvlm/tiny-clip"))
    assert main(["sites", "/no/such/model/dir", "--debug"]) == 1


def test_demo_mode_says_it_runs_an_embedded_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["zero-shot", "--n-per-class", "1"]) == 0
    err = capsys.readouterr().err
    assert "skvlm/tiny-clip is an embedded demo model" in err
    assert "--model openai/clip-vit-base-patch32" in err


def test_with_data_the_default_is_a_real_checkpoint(image_folder, monkeypatch, capsys):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # fail fast, offline
    assert main(["zero-shot", "--data", str(image_folder), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "'openai/clip-vit-base-patch32'" in err and "'skvlm/tiny-clip'" in err


# -- a new user's first hour (issue 27) --------------------------------------------------
COMMANDS = ["probe", "zero-shot", "importance", "extract", "sites", "families", "tune"]
IMAGE_COMMANDS = ["probe", "zero-shot", "importance", "extract", "tune"]


def _help(command, capsys):
    assert main([command, "--help"]) == 0
    return capsys.readouterr().out


def _options(text):
    """``{option: (takes a value, help text)}`` read from an argparse ``--help``."""
    section = text.split("\noptions:\n", 1)[1]
    entries, current = [], None
    for line in section.splitlines():
        if re.match(r"^  -", line):
            current = [line.strip()]
            entries.append(current)
        elif current is not None and line.startswith("    "):
            current.append(line.strip())
    options = {}
    for lines in entries:
        # "--name VALUE, --alias VALUE   help" or "--name  help" then more lines
        head, _, first_help = (re.split(r"(\s{2,})", lines[0], maxsplit=1) + ["", ""])[
            :3
        ]
        names = [part.split()[0] for part in head.split(", ")]
        takes_value = any(len(part.split()) > 1 for part in head.split(", "))
        helptext = " ".join([first_help.strip(), *lines[1:]]).strip()
        options[names[-1] if names[0].startswith("-h") else names[0]] = (
            takes_value,
            helptext,
        )
    return options


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_its_default(command, capsys):
    options = _options(_help(command, capsys))
    assert "--debug" in options and "--verbose" in options
    for name, (takes_value, text) in options.items():
        assert text, f"skvlm {command} {name} has no help"
        if takes_value and "(required)" not in text:
            assert "(default" in text, f"skvlm {command} {name}: no default: {text!r}"


def test_the_help_parser_reads_what_argparse_writes():
    text = (
        "usage: x\n\noptions:\n  -h, --help  show this help\n"
        "  --a A       the a (default: 1)\n  --flag      a flag\n"
        "  --long-option LONG_OPTION\n                        says\n"
        "                        more\n"
    )
    assert _options(text) == {
        "--help": (False, "show this help"),
        "--a": (True, "the a (default: 1)"),
        "--flag": (False, "a flag"),
        "--long-option": (True, "says more"),
    }


def test_one_vocabulary_across_sub_commands(capsys):
    for command in COMMANDS:
        options = _options(_help(command, capsys))
        assert {"--verbose", "--quiet", "--debug"} <= set(options), command
        assert ("--on-error" in options) == (command in IMAGE_COMMANDS), command
        assert "--progress" not in options and "--epochs" not in options
    tune = _options(_help("tune", capsys))
    assert {"--learning-rate-init", "--max-iter", "--lora-r"} <= set(tune)
    # the old spellings still parse
    assert main(["tune", "--epochs", "x"]) == 2
    assert "invalid int value: 'x'" in capsys.readouterr().err


def test_verbose_0_is_quiet(clip_path, capsys):
    args = ["zero-shot", "--model", str(clip_path), "--n-per-class", "1"]
    assert main([*args, "--verbose", "0"]) == 0
    assert capsys.readouterr().err == ""


def test_tune_help_names_the_generative_default_model(capsys):
    text = " ".join(_help("tune", capsys).split())
    assert "else llava-hf/llava-1.5-7b-hf" in text
    assert "clip-vit-base-patch32" not in text


def test_tune_refuses_a_model_that_cannot_answer_before_any_work(capsys):
    assert main(["tune", "--model", "skvlm/tiny-clip", "--n-per-class", "2"]) == 1
    err = capsys.readouterr().err
    assert "skvlm/tiny-clip is a clip model: it has no language model" in err
    assert "--model llava-hf/llava-1.5-7b-hf" in err and "skvlm zero-shot" in err
    assert "Fine-tuning" not in err


def test_families_prints_the_support_matrix(capsys):
    from skvlm import models

    if "support_matrix" not in models.__all__:
        assert main(["families"]) == 1
        assert "has no skvlm.models.support_matrix()" in capsys.readouterr().err
        pytest.skip("skvlm.models.support_matrix() is not there yet")
    assert main(["families", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    expected = models.support_matrix()
    assert list(table.columns) == list(expected.columns)
    assert table["model_type"].tolist() == expected["model_type"].tolist()
    assert main(["families"]) == 0
    assert capsys.readouterr().out.split()[: len(expected.columns)] == list(
        expected.columns
    )


def test_tune_num_processes_relaunches_under_torchrun(monkeypatch):
    from skvlm.cli import _tune

    calls = []

    def run(command, check):
        calls.append(command)
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.setattr(_tune.subprocess, "run", run)
    argv = ["tune", "--n-per-class", "2", "--num-processes", "2", "--quiet"]
    assert main(argv) == 3  # the launcher's exit status
    assert calls == [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "skvlm",
            *argv,
            "--num-processes",
            "1",
        ]
    ]
    # each process parses the same command with --num-processes 1: no relaunch
    args = _main.build_parser().parse_args(calls[0][7:])
    assert args.num_processes == 1 and args.n_per_class == 2
    assert main(["tune", "--num-processes", "0"]) == 2


def test_only_rank_0_writes_the_tune_report(monkeypatch):
    from skvlm.cli import _tune

    monkeypatch.setenv("RANK", "1")
    assert not _tune.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert _tune.is_main_process()
    monkeypatch.delenv("RANK")
    assert _tune.is_main_process()


def test_an_unreachable_hub_fails_at_once_with_the_offline_fix(
    image_folder, monkeypatch, capsys
):
    import socket
    import time

    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    sleeps = []
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(time, "sleep", sleeps.append)  # the hub client's retries
    args = ["zero-shot", "--data", str(image_folder), "--quiet"]
    assert main([*args, "--model", "skvlm-tests/no-such-model"]) == 1
    err = capsys.readouterr().err
    assert sleeps == []  # one request, no retry: fails in a moment, not 30 s
    assert "Hugging Face Hub at https://huggingface.co cannot be reached" in err
    assert "HF_HUB_OFFLINE=1" in err and "`hf download <id>`" in err
    assert "huggingface-cli" not in err


def test_zero_shot_says_when_the_class_names_are_numbers(clip_path, tmp_path, capsys):
    from skvlm.datasets import load_digit_images

    digits = load_digit_images(n_class=2, n_per_class=2)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        image.save(tmp_path / str(label) / f"{i}.png")
    args = ["zero-shot", "--model", str(clip_path), "--data", str(tmp_path)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "the class names are numbers (0, 1, ...)" in err
    assert "--class-names" in err and "UserWarning" not in err
    assert main([*args, "--class-names", "zero,one"]) == 0
    assert "numbers" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, match",
    [
        (["probe", "--cv", "1"], "argument --cv: 1 is too small: give an integer of 2"),
        (["probe", "--n-per-class", "0"], "argument --n-per-class: 0 is too small"),
        (["extract", "--out", "f.npy", "--batch-size", "0"], "--batch-size: 0 is too"),
        (
            ["zero-shot", "--variation", "2"],
            "argument --variation: 2.0 is not in [0, 1]",
        ),
        (["importance", "--test-size", "1.5"], "--test-size: 1.5 is not in [0, 1]"),
        (["tune", "--max-iter", "0"], "argument --max-iter/--epochs: 0 is too small"),
        (["probe", "--cv", "x"], "argument --cv: invalid int value: 'x'"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(args, match, capsys):
    assert main(args) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["probe", "--n-per-class", "2", "--cv", "3"],
            "--cv 3 needs at least 3 images",
        ),
        (["importance", "--n-per-class", "2"], "splits the 20 images into 15 for"),
        (["tune", "--n-per-class", "2"], "each of the 10 classes: give more images"),
    ],
)
def test_too_few_images_are_said_in_the_commands_terms(args, match, capsys):
    assert main([*args, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert match in err and "n_splits" not in err and "--n-per-class" in err


def test_families_table_cuts_reasons_to_numbered_notes():
    from skvlm.cli._families import with_notes

    table = pd.DataFrame(
        {
            "model_type": ["a", "b"],
            "vision": ["tested", "unsupported: no image token"],
            "language": ["unsupported: packs patches", "unsupported: no image token"],
        }
    )
    short, notes = with_notes(table)
    assert short.to_dict("list") == {
        "model_type": ["a", "b"],
        "vision": ["tested", "unsupported [1]"],
        "language": ["unsupported [2]", "unsupported [1]"],
    }
    assert notes == ["no image token", "packs patches"]
