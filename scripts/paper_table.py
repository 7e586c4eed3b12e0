"""The table of Zhang et al. (NeurIPS 2024) in one command, on local copies.

    python scripts/paper_table.py --data DATA --llava MODELS/llava-1.5-7b-hf \\
        --clip MODELS/clip-vit-large-patch14-336 --blip2 MODELS/blip2-opt-2.7b \\
        --datasets caltech,flowers,cars,imagenet --out paper-table/ --tune

``DATA`` holds the paper's layout (``data/`` of GitHub yuhui-zh15/VLMClassifier):
``{dataset}.jsonl``, one ``{"image": path, "label": name, "split": ...}`` a line
(paths absolute or relative to ``DATA``; splits ``train`` and ``test``, ImageNet's
``valid``), and ``{dataset}_classes.json``, the class names. Every row runs with
the paper's settings (see the user guide's "Fidelity to the paper's code"):

==========================  ===================================================
row                         how (paper file)
==========================  ===================================================
CLIP zero-shot              "A photo of a {}", every test image
                            (``main_results/main.py``)
open-ended                  LLaVA's template, greedy, 64 tokens; right when the
                            answer contains the label (``main_results/eval.ipynb``)
closed-set                  every class listed, the paper's random order (its own
                            ``random`` stream, seed 1234)
probabilistic sum / mean    after "The photo features a", on the first 1,000
                            shuffled test images (``inference_analysis/main.py``)
probabilistic, calibrated   ``a * lp + (1 - a) * prior``, best ``a`` of 0..8
                            (``inference_analysis/get_accuracy.ipynb``)
probes, last / mean token   LLaVA's ``hidden_states[-1]``, linear probe on raw
                            features, Adam 1e-3, batch 512, 500 epochs (100 on
                            ImageNet) (``feature_analysis/probe.py``)
BLIP-2 probe, mean token    the same on BLIP-2's language model
CLIP probe                  L2-normalised projected embedding, 300 epochs (40 on
                            ImageNet) (``train_analysis/finetune_clip.py``)
fine-tuned                  LLaVA tuned on the training split ("What type of
                            object is in the photo?" -> the label), exact match
                            (``training_analysis/llava/``)
==========================  ===================================================

Features go to a ``FeatureStore`` in ``OUT/features``; answers and scores are
appended to ``OUT/<dataset>/<row>.jsonl`` image by image, and finished rows to
``OUT/results.json``: an interrupted run resumes where it stopped. The table,
beside the paper's published figures, is written to ``OUT/table.md`` and
``OUT/table.csv``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: The paper's published figures (accuracy %, LLaVA-1.5-7B, BLIP-2-OPT-2.7B and
#: CLIP ViT-L/14-336; Tables 1-3 of arXiv 2405.18415v2, recorded in PAPER.md).
PAPER = {
    "CLIP zero-shot": (74.8, 76.0, 77.5, 95.8),
    "LLaVA open-ended": (22.8, 5.9, 0.0, 47.1),
    "LLaVA probabilistic, sum": (34.8, 14.5, 26.7, 77.8),
    "LLaVA probabilistic, mean": (35.3, 16.5, 18.2, 65.6),
    "LLaVA probabilistic, calibrated": (47.6, 26.8, 48.8, 85.6),
    "LLaVA probe, last token": (76.9, 94.5, 81.0, 96.7),
    "LLaVA probe, mean token": (77.1, 96.2, 82.8, 97.3),
    "BLIP-2 probe, mean token": (81.4, 98.9, 92.6, 98.0),
    "CLIP probe": (85.2, 98.6, 91.5, 97.6),
    "LLaVA fine-tuned": (85.7, None, None, None),
}
PAPER_DATASETS = ("imagenet", "flowers", "cars", "caltech")
#: Row keys (for --rows) and titles.
ROWS = {
    "clip_zero_shot": "CLIP zero-shot",
    "open_ended": "LLaVA open-ended",
    "closed_set": "LLaVA closed-set",
    "sum": "LLaVA probabilistic, sum",
    "mean": "LLaVA probabilistic, mean",
    "calibrated": "LLaVA probabilistic, calibrated",
    "probe_last": "LLaVA probe, last token",
    "probe_mean": "LLaVA probe, mean token",
    "blip2_probe": "BLIP-2 probe, mean token",
    "clip_probe": "CLIP probe",
    "fine_tuned": "LLaVA fine-tuned",
}
SEED = 1234  # the paper's data shuffle (random.seed(1234))
N_PROBABILISTIC = 1000  # inference_analysis/main.py: data[:1000]
QUESTION = "What type of object is in this photo?"
TUNING_QUESTION = "What type of object is in the photo?"  # prepare_data.ipynb


# -- data --------------------------------------------------------------------------
class Dataset:
    """One dataset in the paper's layout, shuffled as the paper's scripts do."""

    def __init__(self, root, name, max_images=None):
        root = Path(root)
        self.name = name
        self.classes = json.loads((root / f"{name}_classes.json").read_text())
        rows = [
            json.loads(line)
            for line in (root / f"{name}.jsonl").read_text().splitlines()
            if line.strip()
        ]
        for row in rows:
            path = Path(row["image"])
            row["image"] = str(path if path.is_absolute() else root / path)
        self.test_split = "valid" if name == "imagenet" else "test"
        self.train = [r for r in rows if r["split"] == "train"]
        self.test = [r for r in rows if r["split"] == self.test_split]
        # main_results/main.py, inference_analysis/main.py: random.seed(seed);
        # random.shuffle(data) over the evaluated split
        self.rng = random.Random(SEED)
        self.rng.shuffle(self.test)
        if max_images:
            self.train = self.train[:max_images]
            self.test = self.test[:max_images]
        unknown = {r["label"] for r in rows} - set(self.classes)
        if unknown:
            raise ValueError(
                f"{name}.jsonl has labels missing from {name}_classes.json: "
                f"{sorted(unknown)[:10]}"
            )
        # classes.index(label): a duplicated name maps to its first position, as
        # in the paper; the later duplicates get a suffix to stay distinct
        self.index = {}
        for i, c in enumerate(self.classes):
            self.index.setdefault(c, i)
        seen = {}
        self.names = []
        for c in self.classes:
            seen[c] = seen.get(c, 0) + 1
            self.names.append(c if seen[c] == 1 else f"{c} ({seen[c]})")

    def xy(self, split):
        rows = self.train if split == "train" else self.test
        return [r["image"] for r in rows], np.array(
            [self.index[r["label"]] for r in rows]
        )

    def closed_set_candidates(self):
        """main_results/main.py with including_label, n_labels = distinct names:
        the paper's own random stream after its shuffle, replayed."""
        unique = sorted(set(self.classes))
        out = []
        for row in self.test:
            others = self.rng.sample(
                sorted(set(unique) - {row["label"]}), len(unique) - 1
            )
            choices = [row["label"], *others]
            self.rng.shuffle(choices)
            out.append([self.index[c] for c in choices])
        return out


# -- resumable pieces ------------------------------------------------------------
class Progress:
    """Finished rows in results.json; per-image records in <dataset>/<row>.jsonl."""

    def __init__(self, out):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.file = self.out / "results.json"
        self.results = json.loads(self.file.read_text()) if self.file.exists() else {}

    def done(self, dataset, row):
        return row in self.results.get(dataset, {})

    def record(self, dataset, row, value, **extra):
        self.results.setdefault(dataset, {})[row] = {"accuracy": value, **extra}
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1))
        tmp.replace(self.file)

    def per_image(self, dataset, row, items, compute, chunk=16):
        """``compute(items) -> list of JSON values``, run on the items not yet
        recorded, appended as they come; returns one value per item."""
        path = self.out / dataset / (row.replace(" ", "_").replace(",", "") + ".jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.exists() else []
        values = [json.loads(line) for line in lines]
        with path.open("a") as f:
            for start in range(len(values), len(items), chunk):
                for value in compute(items[start : start + chunk]):
                    f.write(json.dumps(value) + "\n")
                    values.append(value)
                f.flush()
        return values[: len(items)]


def paper_probe(n_epochs, device="auto"):
    """feature_analysis/probe.py: a linear layer on raw features, Adam (lr 1e-3,
    batch 512, no weight decay), ``n_epochs`` epochs, no early stopping."""
    from skvlm.classifiers import LinearProbeClassifier

    return LinearProbeClassifier.paper_preset(
        n_epochs=n_epochs, device=device, random_state=0
    )


# -- rows --------------------------------------------------------------------------
class DatasetRun:
    """Every row of the table on one dataset; a finished row is never rerun."""

    def __init__(self, args, name, progress, store):
        self.args, self.name, self.progress, self.store = args, name, progress, store
        self.data = Dataset(args.data, name, args.max_images)
        self.X_test, self.y_test = self.data.xy("test")
        self.X_train, self.y_train = self.data.xy("train")
        self.names = self.data.names
        self.truth = [self.data.classes[i] for i in self.y_test]
        self.labels = np.arange(len(self.names))
        self.device = dict(device=args.device, dtype=args.dtype)
        self.imagenet = name == "imagenet"

    def row(self, title, compute):
        if title not in self.args.rows or self.progress.done(self.name, title):
            return
        t0 = time.perf_counter()
        value, extra = compute()
        seconds = time.perf_counter() - t0
        self.progress.record(self.name, title, float(value), seconds=seconds, **extra)
        if not self.args.quiet:
            print(f"{self.name}: {title} {100 * value:.1f} % ({seconds:.0f} s)")

    def generative(self, model=None, **params):
        from skvlm.classifiers import VLMGenerativeClassifier

        params = {
            "class_names": self.names,
            "prompt_template": "paper",
            "batch_size": self.args.batch_size,
            **self.device,
            **params,
        }
        clf = VLMGenerativeClassifier(model or self.args.llava, **params)
        # fit reads no image without calibration: the labels only give classes_
        return clf.fit(self.labels, self.labels)

    def answers(self, title, clf, X, rule="substring"):
        from skvlm.classifiers import answer_is_correct

        def compute():
            answers = self.progress.per_image(self.name, title, X, clf.generate)
            return answer_is_correct(answers, self.truth, rule=rule).mean(), {
                "n": len(X)
            }

        self.row(title, compute)

    def probe(self, model, n_epochs, **vlm_params):
        from sklearn.pipeline import make_pipeline

        from skvlm import VLMEmbeddingTransformer

        vlm = VLMEmbeddingTransformer(
            model,
            cache=self.store,
            batch_size=self.args.batch_size,
            **self.device,
            **vlm_params,
        )
        return make_pipeline(vlm, paper_probe(n_epochs, self.args.device))

    def fitted_score(self, pipe):
        pipe.fit(self.X_train, self.y_train)
        return pipe.score(self.X_test, self.y_test), {
            "n_train": len(self.X_train),
            "n": len(self.X_test),
        }

    # the rows
    def clip_rows(self):
        from sklearn.preprocessing import Normalizer

        from skvlm.classifiers import CLIPZeroShotClassifier

        clip = self.args.clip
        zero_shot = CLIPZeroShotClassifier(
            clip, class_names=self.names, templates=["A photo of a {}"], **self.device
        ).fit(self.labels, self.labels)
        self.row(
            "CLIP zero-shot",
            lambda: (
                zero_shot.score(self.X_test, self.y_test),
                {"n": len(self.X_test)},
            ),
        )
        pipe = self.probe(clip, 40 if self.imagenet else 300, stage="projector")
        pipe.steps.insert(1, ("normalizer", Normalizer()))  # the paper's F.normalize
        self.row("CLIP probe", lambda: self.fitted_score(pipe))

    def generation_rows(self):
        self.answers(
            "LLaVA open-ended", self.generative(strategy="open_ended"), self.X_test
        )
        title = "LLaVA closed-set"
        if title in self.args.rows and not self.progress.done(self.name, title):
            X = pd.DataFrame(
                {"image": self.X_test, "candidates": self.data.closed_set_candidates()}
            )
            clf = self.generative(strategy="closed_set", candidate_order="fixed")
            self.answers(title, clf, X)

    def probabilistic_rows(self):
        X, y = self.X_test[:N_PROBABILISTIC], self.y_test[:N_PROBABILISTIC]
        scorer = self.generative()

        def scores():
            values = self.progress.per_image(
                self.name,
                "LLaVA probabilistic scores",
                X,
                lambda items: scorer.decision_function(items).tolist(),
            )
            return np.array(values)

        lengths = np.array([len(t) for t in scorer.class_token_ids_], dtype=float)
        self.row(
            "LLaVA probabilistic, sum",
            lambda: (np.mean(scores().argmax(1) == y), {"n": len(X)}),
        )
        self.row(
            "LLaVA probabilistic, mean",
            lambda: (np.mean((scores() / lengths).argmax(1) == y), {"n": len(X)}),
        )

        def calibrated():
            s = scores()
            prior = s.mean(axis=0)  # per token, then summed: the same by linearity
            sweep = {
                str(a): float(np.mean((a * s + (1 - a) * prior).argmax(1) == y))
                for a in range(9)
            }
            best = max(sweep, key=sweep.get)
            return sweep[best], {"a": int(best), "sweep": sweep, "n": len(X)}

        self.row("LLaVA probabilistic, calibrated", calibrated)

    def probe_rows(self):
        epochs = 100 if self.imagenet else 500
        for pooling in ("last", "mean"):
            pipe = self.probe(
                self.args.llava,
                epochs,
                stage="language",
                layer=-1,
                pooling=pooling,
                prompt=f"USER: <image>\n{QUESTION}\nASSISTANT:",
            )
            self.row(
                f"LLaVA probe, {pooling} token", lambda p=pipe: self.fitted_score(p)
            )

    def blip2_rows(self):
        pipe = self.probe(
            self.args.blip2,
            100 if self.imagenet else 500,
            stage="language",
            layer=-1,
            pooling="mean",
        )
        self.row("BLIP-2 probe, mean token", lambda: self.fitted_score(pipe))

    def tuned_rows(self):
        title = "LLaVA fine-tuned"
        if title not in self.args.rows or self.progress.done(self.name, title):
            return
        tuned = self.args.tuned
        if self.args.tune and self.args.llava:
            tuned = tune(self.args, self.X_train, self.y_train, self.names, self.name)
        if tuned:
            clf = self.generative(
                tuned,
                strategy="open_ended",
                prompt=TUNING_QUESTION,
                prompt_template=None,
            )
            self.answers(title, clf, self.X_test, rule="exact")

    def run(self):
        if self.args.clip:
            self.clip_rows()
        if self.args.llava:
            self.generation_rows()
            self.probabilistic_rows()
            self.probe_rows()
        if self.args.blip2:
            self.blip2_rows()
        self.tuned_rows()


def run(args):
    from skvlm import FeatureStore

    progress = Progress(args.out)
    store = FeatureStore(Path(args.out) / "features")
    for name in args.datasets:
        DatasetRun(args, name, progress, store).run()
    table = write_table(progress.results, args.out, args.datasets)
    if not args.quiet:
        print(table)
    return progress.results


def tune(args, X_train, y_train, names, dataset):
    """The paper's fix: LLaVA trained on the classification data (resumable run)."""
    try:
        from skvlm.tuning import VLMClassificationTuner
    except ImportError:
        print("skvlm.tuning is not available: the fine-tuned row is left out.")
        return None
    tuner = VLMClassificationTuner(
        args.llava,
        objective="generation",
        train="lora",
        class_names=names,
        prompt=TUNING_QUESTION,
        answer_template="{}",
        learning_rate=2e-4,
        max_epochs=args.tune_epochs,
        batch_size=args.batch_size,
        output_dir=Path(args.out) / "tuning" / dataset,
        random_state=0,
        device=args.device,
        dtype=args.dtype,
    )
    return tuner.fit(X_train, y_train).model_path_


def write_table(results, out, datasets):
    """Our figures beside the paper's, in %."""
    lines = []
    for title in ROWS.values():
        line = {"row": title}
        for name in datasets:
            value = results.get(name, {}).get(title, {}).get("accuracy")
            line[f"{name} (ours)"] = None if value is None else round(100 * value, 1)
            paper = PAPER.get(title)
            if name in PAPER_DATASETS and paper is not None:
                line[f"{name} (paper)"] = paper[PAPER_DATASETS.index(name)]
        lines.append(line)
    table = pd.DataFrame(lines).set_index("row")
    table.to_csv(Path(out) / "table.csv")
    text = table.to_markdown() if _has_tabulate() else table.to_string()
    (Path(out) / "table.md").write_text(text + "\n")
    return text


def _has_tabulate():
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder in the paper's layout")
    parser.add_argument("--datasets", default="caltech,flowers,cars,imagenet")
    parser.add_argument("--llava", help="LLaVA-1.5 directory (or hub id)")
    parser.add_argument("--clip", help="CLIP ViT-L/14-336 directory (or hub id)")
    parser.add_argument("--blip2", help="BLIP-2 OPT-2.7B directory (or hub id)")
    parser.add_argument("--tuned", help="an already fine-tuned LLaVA to evaluate")
    parser.add_argument("--tune", action="store_true", help="fine-tune LLaVA first")
    parser.add_argument("--tune-epochs", type=int, default=1)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"subset of {', '.join(ROWS)}"
    )
    parser.add_argument("--max-images", type=int, default=None, help="per split")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", default="paper-table")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    keys = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(keys) - set(ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows are {list(ROWS)}")
    args.rows = [ROWS[k] for k in keys]
    return args


def main(argv=None):
    return run(parse(argv))


if __name__ == "__main__":
    main()
