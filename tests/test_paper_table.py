"""scripts/paper_table.py end to end on tiny models: a tiny dataset in the paper's
layout (``{dataset}.jsonl`` + ``{dataset}_classes.json``) and tiny fake torchvision
layouts of the four data sets; its resumption, its two protocols, and the
stratified ``--max-images``."""

import importlib.util
import json
import random
import warnings
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


@pytest.mark.slow
def test_table_end_to_end_and_resume(table, layout, blip2, tmp_path, monkeypatch):
    out = tmp_path / "out"
    extra = ("--blip2", blip2, "--tuned", "skvlm/tiny-llava", "--probe-epochs", "5")
    everything = table.main(_args(layout, out, *extra))["caltech"]
    assert set(everything) == {"paper", "sound"}
    results = everything["sound"]
    assert set(results) == set(table.ROWS.values())
    for protocol, rows in everything.items():
        for title, entry in rows.items():
            assert 0 <= entry["accuracy"] <= 1, title
            assert entry["protocol"] == protocol
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
    # a row no choice touches has one figure under both protocols
    assert everything["paper"]["LLaVA open-ended"]["accuracy"] == pytest.approx(
        expected
    )
    # paper probes report their best test epoch; sound ones the last epoch's
    for title in ("CLIP probe", "LLaVA probe, last token", "BLIP-2 probe, mean token"):
        paper = everything["paper"][title]
        assert paper["accuracy"] == max(paper["curve"]) and len(paper["curve"]) == 5
        assert "curve" not in results[title]
    csv = pd.read_csv(out / "table.csv", index_col="row")
    assert list(csv.columns) == [
        "caltech [paper protocol]",
        "caltech [sound protocol]",
        "caltech [published]",
    ]
    assert csv.loc["LLaVA open-ended", "caltech [published]"] == 47.1
    assert (out / "table.md").exists() and (out / "features").is_dir()

    # Interrupted after 5 answers of the open-ended row: only the rest is generated,
    # and finished rows are not run again.
    lines = (out / "caltech" / "LLaVA_open-ended.jsonl").read_text().splitlines()
    (out / "caltech" / "LLaVA_open-ended.jsonl").write_text("\n".join(lines[:5]) + "\n")
    saved = json.loads((out / "results.json").read_text())
    for protocol in ("paper", "sound"):
        del saved["caltech"][protocol]["LLaVA open-ended"]
    (out / "results.json").write_text(json.dumps(saved))
    generated = []
    original = VLMGenerativeClassifier.generate

    def counting(self, X):
        generated.append(len(X))
        return original(self, X)

    monkeypatch.setattr(VLMGenerativeClassifier, "generate", counting)
    again = table.main(_args(layout, out, "--blip2", blip2, "--probe-epochs", "5"))
    again = again["caltech"]["sound"]
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
    with pytest.raises(SystemExit):
        table.main(_args(layout, tmp_path, "--datasets", "mnist"))
    with pytest.raises(SystemExit):
        table.main(_args(layout, tmp_path, "--protocol", "lucky"))


# -- --max-images: stratified, seeded --------------------------------------------
def _sorted_layout(root, counts, classes):
    """A class-sorted jsonl (as the paper's files are): every train row of class
    0, then class 1, ...; then the test rows. No image is read."""
    rows = []
    for split in ("train", "test"):
        for k, n in enumerate(counts):
            rows += [
                {"image": f"{split}/{k}_{i}.png", "label": classes[k], "split": split}
                for i in range(n)
            ]
    (root / "caltech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "caltech_classes.json").write_text(json.dumps(classes))
    return root


def test_max_images_keeps_every_class_of_a_sorted_dataset(table, tmp_path):
    classes = [f"class {k}" for k in range(100)]
    counts = [10 + (k % 7) * 5 for k in range(100)]  # 10 to 40 images a class
    _sorted_layout(tmp_path, counts, classes)
    full = sum(counts)
    data = table.Dataset(tmp_path, "caltech", max_images=600)
    for split in (data.train, data.test):
        labels = [r["label"] for r in split]
        assert len(labels) == 600
        assert set(labels) == set(classes)  # file order would keep about 24
        # proportional: each class within one image of its share
        for k, n in enumerate(counts):
            assert abs(labels.count(classes[k]) - n * 600 / full) < 1 + 1e-9
    again = table.Dataset(tmp_path, "caltech", max_images=600)
    assert [r["image"] for r in again.train] == [r["image"] for r in data.train]
    assert [r["image"] for r in again.test] == [r["image"] for r in data.test]
    # the test subset keeps the paper's shuffled order
    shuffled = table.Dataset(tmp_path, "caltech")
    position = {r["image"]: i for i, r in enumerate(shuffled.test)}
    kept = [position[r["image"]] for r in data.test]
    assert kept == sorted(kept)


def test_max_images_warns_when_a_class_keeps_one_training_image(table, tmp_path):
    classes = ["big", "small"]
    _sorted_layout(tmp_path, [40, 2], classes)
    with pytest.warns(UserWarning, match="fewer than 2 training images"):
        data = table.Dataset(tmp_path, "caltech", max_images=10)
    assert {r["label"] for r in data.train} == set(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table.Dataset(tmp_path, "caltech", max_images=40)


# -- the two protocols' choices ------------------------------------------------------
def test_probe_choices_of_each_protocol(table):
    from sklearn.base import clone
    from sklearn.datasets import load_digits

    paper, sound = table.paper_probe(7, "paper", "cpu"), table.paper_probe(7, "sound")
    assert (paper.init, paper.shuffle) == ("torch_linear", False)  # nn.Linear, once
    assert (sound.init, sound.shuffle) == ("zero_output", True)
    assert paper.max_iter == sound.max_iter == 7 and not paper.early_stopping
    X, y = load_digits(return_X_y=True)
    X_train, y_train, X_test, y_test = X[:300], y[:300], X[300:500], y[300:500]
    best, extra = table.best_test_epoch(
        clone(paper), X_train, y_train, X_test, y_test, np.arange(10)
    )
    # the reference: a fresh probe fitted for k epochs, for every k
    curve = [
        clone(paper).set_params(max_iter=k, n_iter_no_change=k)
        .fit(X_train, y_train).score(X_test, y_test)
        for k in range(1, 8)
    ]  # fmt: skip
    np.testing.assert_allclose(extra["curve"], curve, atol=1e-12)
    assert best == max(curve) and extra["epoch"] == int(np.argmax(curve)) + 1


def test_zero_shot_scoring_of_each_protocol(table):
    names = ["tiger", "tiger cat", "missile", "missile", "crocodile", "crocodile head"]
    predicted = [1, 1, 2, 3, 5, 2]
    target = [0, 1, 3, 2, 4, 4]
    paper = table.zero_shot_correct(predicted, target, names, "paper")
    sound = table.zero_shot_correct(predicted, target, names, "sound")
    # tiger -> tiger cat and crocodile -> crocodile head count for the paper,
    # and either "missile" is right
    assert paper.tolist() == [True, True, True, True, True, False]
    assert sound.tolist() == [False, True, False, False, False, False]


def test_duplicate_names_under_each_protocol(table, tmp_path):
    from paper_layouts import make_imagenet

    make_imagenet(tmp_path / "imagenet", n_train=2, n_val=2)
    data = table.Dataset(tmp_path, "imagenet")
    # paper: one entry per distinct name, so both "missile" classes share one
    # prompt and one label; sound: distinct names and labels
    assert len(data.unique) == 998 and data.unique.count("missile") == 1
    assert data.names[744] == "missile (2)" and data.names[657] == "missile"
    _, y_sound = data.xy("test", "sound")
    _, y_paper = data.xy("test", "paper")
    truth = [r["label"] for r in data.test]
    missiles = [i for i, t in enumerate(truth) if t == "missile"]
    assert sorted({int(y_sound[i]) for i in missiles}) == [657, 744]
    assert len({int(y_paper[i]) for i in missiles}) == 1
    assert [data.unique[k] for k in y_paper] == truth


# -- the four data sets, from torchvision's layout -----------------------------------
@pytest.mark.slow
def test_paper_protocol_on_the_four_layouts_then_sound(table, tmp_path):
    from paper_layouts import make_all

    data = make_all(tmp_path / "data")
    out = tmp_path / "out"
    common = [
        "--data", str(data), "--datasets", "caltech,flowers,cars,imagenet",
        "--out", str(out), "--llava", "skvlm/tiny-llava", "--clip", "skvlm/tiny-clip",
        "--tuned", "skvlm/tiny-llava", "--device", "cpu", "--quiet",
        "--max-images", "8", "--probe-epochs", "3", "--batch-size", "4",
    ]  # fmt: skip
    results = table.main([*common, "--protocol", "paper"])
    for name in ("caltech", "flowers", "cars", "imagenet"):
        assert set(results[name]) == {"paper"}
        rows = results[name]["paper"]
        assert set(rows) == set(table.ROWS.values()) - {"BLIP-2 probe, mean token"}
        # the tiny CLIP's vocabulary is digit words: real class names all become
        # '<unk>', which CLIPZeroShotClassifier refuses; the row says so
        zero_shot = rows.pop("CLIP zero-shot")
        assert zero_shot["accuracy"] is None
        assert "tokenized" in zero_shot["unavailable"]
        assert all(0 <= e["accuracy"] <= 1 for e in rows.values())
    csv = pd.read_csv(out / "table.csv", index_col="row")
    assert "imagenet [paper protocol]" in csv.columns
    assert "imagenet [sound protocol]" not in csv.columns
    assert csv.loc["CLIP zero-shot", "imagenet [published]"] == 74.8

    results = table.main([*common, "--protocol", "sound"])  # paper rows kept
    csv = pd.read_csv(out / "table.csv", index_col="row")
    for name in ("caltech", "flowers", "cars", "imagenet"):
        assert set(results[name]) == {"sound", "paper"}
        for protocol in ("paper", "sound"):
            column = csv[f"{name} [{protocol} protocol]"]
            ran = column.drop(["BLIP-2 probe, mean token", "CLIP zero-shot"])
            assert ran.notna().all()
    text = (out / "table.md").read_text()
    assert "[paper protocol]" in text and "[sound protocol]" in text
    # 8 images a split at most, every class kept (4 ImageNet classes have images)
    run = table.Dataset(data, "imagenet", max_images=8)
    assert len({r["label"] for r in run.train}) == 3  # the two missiles share a name
    assert len(run.train) == len(run.test) == 8


def test_fine_tuned_row_uses_the_tuners_paper_preset(table, layout, tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "out"
    results = table.main(
        _args(layout, out, "--rows", "fine_tuned", "--tune", "--protocol", "paper")
    )
    entry = results["caltech"]["paper"]["LLaVA fine-tuned"]
    assert 0 <= entry["accuracy"] <= 1
    assert (out / "tuning" / "caltech").is_dir()
