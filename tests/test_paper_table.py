"""scripts/paper_table.py end to end on tiny models and a tiny dataset in the paper's
layout (``{dataset}.jsonl`` + ``{dataset}_classes.json``), and its resumption."""

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.datasets import load_digit_images
from skvlm.testing import make_tiny_blip2

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_table.py"
# a duplicated name, as in ImageNet's list ("missile", "sunglasses")
CLASSES = ["zero", "one", "two", "three", "one"]


def _load_script():
    spec = importlib.util.spec_from_file_location("paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return _load_script()


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """caltech.jsonl / caltech_classes.json with relative image paths."""
    root = tmp_path_factory.mktemp("paper_data")
    digits = load_digit_images(n_class=4, n_per_class=7)
    (root / "images").mkdir()
    rows = []
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        image.save(root / "images" / f"{i}.png")
        split = "train" if i % 7 < 4 else "test"
        rows.append(
            {"image": f"images/{i}.png", "label": CLASSES[label], "split": split}
        )
    (root / "caltech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "caltech_classes.json").write_text(json.dumps(CLASSES))
    return root


@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    return str(make_tiny_blip2(tmp_path_factory.mktemp("paper_blip2")))


def _args(layout, out, *extra):
    return [
        "--data", str(layout), "--datasets", "caltech", "--out", str(out),
        "--llava", "skvlm/tiny-llava", "--clip", "skvlm/tiny-clip",
        "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


def test_dataset_follows_the_papers_shuffle_and_candidates(table, layout):
    data = table.Dataset(layout, "caltech")
    # main_results/main.py: random.seed(1234); random.shuffle(test split); then,
    # per item, random.sample of the other distinct names and random.shuffle
    rows = [json.loads(line) for line in (layout / "caltech.jsonl").open()]
    test = [r for r in rows if r["split"] == "test"]
    random.seed(1234)
    random.shuffle(test)
    assert [Path(r["image"]).name for r in data.test] == [
        Path(r["image"]).name for r in test
    ]
    expected = []
    for item in test:
        others = random.sample(sorted(set(CLASSES) - {item["label"]}), 3)
        choices = [item["label"], *others]
        random.shuffle(choices)
        expected.append([CLASSES.index(c) for c in choices])
    assert data.closed_set_candidates() == expected
    # duplicates map to their first position (classes.index), and stay distinct
    assert data.names == ["zero", "one", "two", "three", "one (2)"]
    assert set(data.xy("test")[1]) <= {0, 1, 2, 3}


def test_table_end_to_end_and_resume(table, layout, blip2, tmp_path, monkeypatch):
    out = tmp_path / "out"
    results = table.main(
        _args(layout, out, "--blip2", blip2, "--tuned", "skvlm/tiny-llava")
    )["caltech"]
    assert set(results) == set(table.ROWS.values())
    for title, entry in results.items():
        assert 0 <= entry["accuracy"] <= 1, title
    assert results["LLaVA probabilistic, calibrated"]["a"] in range(9)
    # the calibrated row is the best of the sweep, which holds the plain sum (a=1)
    sweep = results["LLaVA probabilistic, calibrated"]["sweep"]
    assert results["LLaVA probabilistic, sum"]["accuracy"] == sweep["1"]
    assert max(sweep.values()) == results["LLaVA probabilistic, calibrated"]["accuracy"]
    # the open-ended row is the paper's measure on the recorded answers
    answers = [
        json.loads(line) for line in (out / "caltech" / "LLaVA_open-ended.jsonl").open()
    ]
    data = table.Dataset(layout, "caltech")
    truth = [r["label"] for r in data.test]
    assert len(answers) == len(truth) == 12
    expected = np.mean(
        [t.lower() in a.lower() for t, a in zip(truth, answers, strict=True)]
    )
    assert results["LLaVA open-ended"]["accuracy"] == pytest.approx(expected)
    csv = pd.read_csv(out / "table.csv", index_col="row")
    assert list(csv.columns) == ["caltech (ours)", "caltech (paper)"]
    assert csv.loc["LLaVA open-ended", "caltech (paper)"] == 47.1
    assert (out / "table.md").exists() and (out / "features").is_dir()

    # Interrupted after 5 answers of the open-ended row: only the rest is generated,
    # and finished rows are not run again.
    lines = (out / "caltech" / "LLaVA_open-ended.jsonl").read_text().splitlines()
    (out / "caltech" / "LLaVA_open-ended.jsonl").write_text("\n".join(lines[:5]) + "\n")
    saved = json.loads((out / "results.json").read_text())
    del saved["caltech"]["LLaVA open-ended"]
    (out / "results.json").write_text(json.dumps(saved))
    generated = []
    original = VLMGenerativeClassifier.generate

    def counting(self, X):
        generated.append(len(X))
        return original(self, X)

    monkeypatch.setattr(VLMGenerativeClassifier, "generate", counting)
    again = table.main(_args(layout, out, "--blip2", blip2))["caltech"]
    assert sum(generated) == 12 - 5
    assert again["LLaVA open-ended"]["accuracy"] == pytest.approx(expected)
    assert again["CLIP probe"] == results["CLIP probe"]  # kept, not rerun


def test_unknown_row_and_label_errors(table, layout, tmp_path):
    with pytest.raises(SystemExit):
        table.main(_args(layout, tmp_path, "--rows", "nope"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "caltech.jsonl").write_text(
        json.dumps({"image": "x.png", "label": "eleven", "split": "test"}) + "\n"
    )
    (bad / "caltech_classes.json").write_text(json.dumps(CLASSES))
    with pytest.raises(ValueError, match="eleven"):
        table.Dataset(bad, "caltech")
