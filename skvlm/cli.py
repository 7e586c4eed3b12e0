"""The ``skvlm`` command: probe layers, score CLIP zero-shot, rank features.

Every subcommand runs offline on the embedded models and digit images when
given no data, and on a folder of class subfolders or a CSV manifest
otherwise. Errors print one line on stderr (a traceback only with
``--debug``); the exit status is 0 on success, 1 on an error, 2 on bad
arguments and 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

#: What ``skvlm probe`` runs on with no arguments (sized for ``make demo``).
DEMO_MODEL = "skvlm/tiny-llava"
DEMO_N_PER_CLASS = 50
DEMO_VARIATION = 0.5


class CLIError(Exception):
    """A usage problem found after parsing (printed as one line)."""


def main(argv=None):
    """Run the ``skvlm`` command line.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 1 on an error, 2 on bad arguments, 130 on interrupt.

    Examples
    --------
    >>> from skvlm.cli import main
    >>> main(["--version"])
    skvlm 0.1.0
    0
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments
        return int(exc.code or 0)
    if getattr(args, "version", False):
        from . import __version__

        print(f"skvlm {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            _quiet_libraries(args)
            args.run(args)
    except KeyboardInterrupt:
        print("skvlm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"skvlm {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


# -- arguments ------------------------------------------------------------------
def _common(parser, model):
    parser.add_argument(
        "--model",
        default=model,
        help=f"model id, local directory or shipped name (default: {model})",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="a folder with one subfolder per class, or a CSV with image,label "
        "columns (default: the embedded digit images)",
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=DEMO_N_PER_CLASS,
        help="embedded data only: images per digit (default: %(default)s)",
    )
    parser.add_argument(
        "--variation",
        type=float,
        default=DEMO_VARIATION,
        help="embedded data only: augmentation strength in [0, 1] (default: "
        "%(default)s)",
    )
    parser.add_argument("--cache", default=None, help="feature store directory")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error"
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="skvlm",
        description="Probe, score and inspect vision-language models with "
        "scikit-learn. With no --data, runs on the embedded digit images.",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    probe = sub.add_parser(
        "probe",
        help="cross-validate a linear probe at every layer and pooling",
        description="Cross-validate a linear probe at every (stage, layer, "
        "pooling) site; write results.csv, results.json, probe_layers.png and "
        "report.html.",
    )
    _common(probe, DEMO_MODEL)
    probe.add_argument(
        "--stage", default="all", help="comma-separated stages, or all (default)"
    )
    probe.add_argument(
        "--layers", default="all", help="comma-separated layers, or all (default)"
    )
    probe.add_argument(
        "--pooling", default="all", help="comma-separated poolings, or all (default)"
    )
    probe.add_argument("--cv", type=int, default=5, help="folds (default: 5)")
    probe.add_argument("--scoring", default=None, help="an sklearn scorer name")
    probe.add_argument("--prompt", default=None, help="language-stage instruction")
    probe.add_argument("--n-jobs", type=int, default=None)
    probe.add_argument("--random-state", type=int, default=0)
    probe.add_argument(
        "--out", default="skvlm-report", help="report folder (default: %(default)s)"
    )
    probe.set_defaults(run=run_probe)

    zero = sub.add_parser(
        "zero-shot",
        help="CLIP / SigLIP zero-shot accuracy",
        description="Classify the images by similarity to class-name prompts "
        "and print the accuracy, overall and per class.",
    )
    _common(zero, "skvlm/tiny-clip")
    zero.add_argument(
        "--class-names",
        default=None,
        help="comma-separated names, one per class in sorted label order "
        "(default: the labels)",
    )
    zero.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template with {} for the class name; repeat to ensemble "
        "(default: 'a photo of the digit {}.' on the embedded data, else "
        "'a photo of a {}.')",
    )
    zero.set_defaults(run=run_zero_shot)

    imp = sub.add_parser(
        "importance",
        help="permutation importance of a probe's features",
        description="Fit a probe at one stage and pooling (on the layers "
        "given, concatenated) on a training split and print the permutation "
        "importance of its top dimensions and of each layer on the test split.",
    )
    _common(imp, DEMO_MODEL)
    imp.add_argument("--stage", default="vision")
    imp.add_argument(
        "--layers", default="all", help="comma-separated layers, or all (default)"
    )
    imp.add_argument("--pooling", default="auto", help="one pooling (default: auto)")
    imp.add_argument("--prompt", default=None, help="language-stage instruction")
    imp.add_argument("--top-k", type=int, default=10)
    imp.add_argument("--n-repeats", type=int, default=5)
    imp.add_argument("--test-size", type=float, default=0.25)
    imp.add_argument("--random-state", type=int, default=0)
    imp.add_argument("--out", default=None, help="folder for the CSV tables")
    imp.set_defaults(run=run_importance)
    _tune_parser(sub)
    return parser


def _csv(value, name, *, ints=False):
    if value == "all":
        return "all"
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise CLIError(f"--{name} is empty; give a comma-separated list or 'all'.")
    if not ints:
        return [int(v) if v.lstrip("-").isdigit() else v for v in items]
    try:
        return [int(v) for v in items]
    except ValueError:
        raise CLIError(
            f"--{name}={value!r} is not a comma-separated list of ints (e.g. 0,2,-1) "
            "or 'all'."
        ) from None


# -- shared steps -----------------------------------------------------------------
def _quiet_libraries(args):
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:  # the hub's retry notices would break the one-line error contract
        import huggingface_hub

        huggingface_hub.utils.logging.set_verbosity_error()
    except (ImportError, AttributeError):
        pass
    if args.quiet:
        warnings.simplefilter("ignore")


def _say(args, text):
    if not args.quiet:
        print(text, file=sys.stderr)


def _load_data(args):
    """(images, labels, class names, description) from --data or the embedded set."""
    from .datasets import load_digit_images, load_image_csv, load_image_folder

    if args.data is None:
        data = load_digit_images(n_per_class=args.n_per_class, variation=args.variation)
        what = (
            f"{len(data.images)} embedded digit images ({args.n_per_class} per "
            f"class, variation {args.variation})"
        )
        return data.images, data.target, list(data.target_names), what
    path = Path(args.data)
    if not path.exists():
        raise CLIError(
            f"--data {args.data!r} does not exist; give a folder of class "
            "subfolders or a CSV with image,label columns."
        )
    if path.is_dir():
        data = load_image_folder(path)
    elif path.suffix.lower() == ".csv":
        data = load_image_csv(path)
    else:
        raise CLIError(
            f"--data {args.data!r} is neither a folder nor a .csv file; give a "
            "folder of class subfolders or a CSV with image,label columns."
        )
    what = f"{len(data.data)} images in {len(data.target_names)} classes from {path}"
    return data.data, data.target, [str(n) for n in data.target_names], what


# -- subcommands -------------------------------------------------------------------
def run_probe(args):
    """``skvlm probe``: probe_layers, a compact table, and the report folder."""
    from .probing import probe_layers

    X, y, _, what = _load_data(args)
    stages = _csv(args.stage, "stage")
    _say(args, f"Probing {args.model} on {what}.")
    report = probe_layers(
        args.model,
        X,
        y,
        stages="all" if stages == "all" else [str(s) for s in stages],
        layers=_csv(args.layers, "layers", ints=True),
        poolings=_csv(args.pooling, "pooling"),
        cv=args.cv,
        scoring=args.scoring,
        cache=args.cache,
        prompt=args.prompt,
        batch_size=args.batch_size,
        device=args.device,
        n_jobs=args.n_jobs,
        progress=not args.quiet,
        random_state=args.random_state,
    )
    paths = report.save(args.out)
    print(report.to_text())
    best = report.best_params_
    print(
        f"best: {best['stage']} layer {best['layer']} {best['pooling']} "
        f"({report.best_['mean_score']:.3f}); report in "
        f"{os.path.relpath(paths['html'])}"
    )


def run_zero_shot(args):
    """``skvlm zero-shot``: CLIP zero-shot accuracy, overall and per class."""
    import numpy as np
    from sklearn.metrics import accuracy_score

    from .classifiers import CLIPZeroShotClassifier

    X, y, names, what = _load_data(args)
    if args.class_names is not None:
        names = [n.strip() for n in args.class_names.split(",")]
        if len(names) != len(np.unique(y)):
            raise CLIError(
                f"--class-names gives {len(names)} names for {len(np.unique(y))} "
                "classes; give one name per class, in sorted label order."
            )
    templates = args.template
    if templates is None:
        embedded = args.data is None
        templates = ["a photo of the digit {}." if embedded else "a photo of a {}."]
    for template in templates:
        if "{}" not in template:
            raise CLIError(
                f"--template {template!r} has no {{}} for the class name; "
                "e.g. 'a photo of a {}.'."
            )
    _say(args, f"Zero-shot {args.model} on {what}.")
    clf = CLIPZeroShotClassifier(
        args.model,
        class_names=names,
        templates=templates,
        batch_size=args.batch_size,
        device=args.device,
        cache=args.cache,
        progress=not args.quiet,
    )
    pred = clf.fit(X, y).predict(X)
    y = np.asarray(y)
    print(f"{'class':>12} {'n':>5} accuracy")
    for label, name in zip(clf.classes_, names, strict=True):
        mask = y == label
        print(
            f"{name:>12} {int(mask.sum()):>5} {accuracy_score(y[mask], pred[mask]):.3f}"
        )
    chance = np.bincount(np.unique(y, return_inverse=True)[1]).max() / len(y)
    print(
        f"zero-shot accuracy: {accuracy_score(y, pred):.3f} (chance {chance:.3f}, "
        f"templates {templates})"
    )


def run_importance(args):
    """``skvlm importance``: permutation importance of a probe at one site."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from ._embedding import VLMEmbeddingTransformer
    from .inspection import groups_from_feature_names, permutation_importance
    from .models import load_adapter
    from .probing import default_probe

    X, y, _, what = _load_data(args)
    layers = _csv(args.layers, "layers", ints=True)
    if layers == "all":
        adapter = load_adapter(args.model, device=args.device)
        if args.stage not in adapter.stages:
            raise CLIError(
                f"--stage {args.stage!r} is not a stage of {args.model}; its stages "
                f"are {list(adapter.stages)}."
            )
        layers = list(range(adapter.n_layers(args.stage)))
    pooling = _csv(args.pooling, "pooling")
    if pooling == "all" or len(pooling) != 1:
        raise CLIError("--pooling takes one pooling name (or auto), not a list.")
    _say(args, f"Importance of {args.model} {args.stage} features on {what}.")
    vlm = VLMEmbeddingTransformer(
        args.model,
        stage=args.stage,
        layer=layers,
        pooling=pooling[0],
        prompt=args.prompt,
        batch_size=args.batch_size,
        device=args.device,
        cache=args.cache,
        progress=not args.quiet,
    )
    features = vlm.fit_transform(X)
    names = vlm.get_feature_names_out()
    F_train, F_test, y_train, y_test = train_test_split(
        features,
        np.asarray(y),
        test_size=args.test_size,
        stratify=np.asarray(y),
        random_state=args.random_state,
    )
    probe = default_probe().fit(F_train, y_train)
    common = dict(n_repeats=args.n_repeats, random_state=args.random_state)
    dims = permutation_importance(probe, F_test, y_test, **common)
    groups = groups_from_feature_names(names, by="layer")
    by_layer = permutation_importance(probe, F_test, y_test, groups=groups, **common)
    top = (
        pd.DataFrame(
            {
                "feature": names,
                "importance": dims.importances_mean,
                "std": dims.importances_std,
            }
        )
        .sort_values("importance", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    layer_table = pd.DataFrame(
        {
            "group": by_layer.group_names,
            "importance": by_layer.importances_mean,
            "std": by_layer.importances_std,
        }
    )
    print(f"probe test accuracy: {probe.score(F_test, y_test):.3f}")
    print(f"top {args.top_k} of {len(names)} dimensions (accuracy drop when permuted):")
    print(top.head(args.top_k).to_string(index=False, float_format="%.4f"))
    print("by layer (all dimensions of a layer permuted together):")
    print(layer_table.to_string(index=False, float_format="%.4f"))
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        top.to_csv(out / "importance_dims.csv", index=False)
        layer_table.to_csv(out / "importance_layers.csv", index=False)


# -- skvlm tune -------------------------------------------------------------------------
def _tune_parser(sub):
    tune = sub.add_parser(
        "tune",
        help="fine-tune a generative VLM on the images and compare it with the base",
        description="Fine-tune a generative VLM on a training split (LoRA, the "
        "projector or everything; the generation or cross-entropy objective), write "
        "the tuned model, and compare base and tuned on the held-out split: "
        "accuracy per strategy and per class, and a linear probe at every language "
        "layer. Writes accuracy.csv, per_class.csv, probes.csv, report.json, "
        "tuning.png and report.html; the tuned model goes to a run-<key> folder "
        "inside --out.",
    )
    _common(tune, DEMO_MODEL)
    tune.add_argument(
        "--class-names",
        default=None,
        help="comma-separated names, one per class in sorted label order "
        "(default: the labels)",
    )
    tune.add_argument(
        "--objective", default="generation", choices=["generation", "cross_entropy"]
    )
    tune.add_argument("--train", default="lora", choices=["lora", "projector", "full"])
    tune.add_argument("--learning-rate", type=float, default=2e-4)
    tune.add_argument("--epochs", type=int, default=3, help="default: %(default)s")
    tune.add_argument("--lora-rank", type=int, default=8)
    tune.add_argument("--lora-alpha", type=float, default=16)
    tune.add_argument("--prompt", default=None, help="the question asked")
    tune.add_argument(
        "--answer-template",
        default="The photo features a {}.",
        help="the answer learnt, {} standing for the class name",
    )
    tune.add_argument("--test-size", type=float, default=0.25)
    tune.add_argument(
        "--strategies",
        default="probabilistic,open_ended,closed_set",
        help="comma-separated VLMGenerativeClassifier strategies to compare",
    )
    tune.add_argument("--max-new-tokens", type=int, default=16)
    tune.add_argument(
        "--probe-pooling",
        default="last",
        help="pooling of the per-layer probe curve; 'none' skips the probes",
    )
    tune.add_argument("--cv", type=int, default=3, help="probe folds (default: 3)")
    tune.add_argument("--random-state", type=int, default=0)
    tune.add_argument(
        "--out", default="skvlm-tune", help="output folder (default: %(default)s)"
    )
    tune.set_defaults(run=run_tune, batch_size=8)  # training batches: smaller


def run_tune(args):
    """``skvlm tune``: fine-tune, then compare base and tuned on held-out images."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from ._tuning_report import compare_models
    from .tuning import VLMClassificationTuner

    X, y, names, what = _load_data(args)
    y = np.asarray(y)
    classes = np.unique(y)
    if args.class_names is not None:
        names = [n.strip() for n in args.class_names.split(",")]
        if len(names) != len(classes):
            raise CLIError(
                f"--class-names gives {len(names)} names for {len(classes)} classes; "
                "give one name per class, in sorted label order."
            )
    elif args.data is not None:
        names = [str(c) for c in classes]
    strategies = _csv(args.strategies, "strategies")
    if not 0 < args.test_size < 1:
        raise CLIError(f"--test-size {args.test_size} must be between 0 and 1.")
    rows = np.arange(len(y))
    train, test = train_test_split(
        rows, test_size=args.test_size, stratify=y, random_state=args.random_state
    )
    X_train, X_test = [X[i] for i in train], [X[i] for i in test]
    _say(
        args,
        f"Fine-tuning {args.model} ({args.train}, {args.objective}) on "
        f"{len(train)} of {what}; {len(test)} held out.",
    )
    tuner = VLMClassificationTuner(
        args.model,
        objective=args.objective,
        train=args.train,
        class_names=dict(zip(classes, names, strict=True)),
        prompt=args.prompt,
        answer_template=args.answer_template,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        learning_rate=args.learning_rate,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        output_dir=args.out,
        random_state=args.random_state,
        device=args.device,
        progress=not args.quiet,
    ).fit(X_train, y[train])
    _say(args, f"Comparing {args.model} with the tuned model on the held-out images.")
    pooling = None if args.probe_pooling == "none" else args.probe_pooling
    report = compare_models(
        tuner,
        X_train,
        y[train],
        X_test,
        y[test],
        strategies=[str(s) for s in strategies],
        probe=pooling is not None,
        probe_pooling=pooling or "last",
        cv=args.cv,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.quiet,
        random_state=args.random_state,
    )
    paths = report.save(args.out)
    print(report.to_text())
    print(
        f"tuned model: {tuner.model_path_} (pass it as --model); report in "
        f"{os.path.relpath(paths['html'])}"
    )
