"""The ``skvlm`` command: probe layers, score zero-shot, rank features, extract.

Every subcommand runs offline on the embedded demo models and digit images
when given no data (and says so), and on a folder of class subfolders or a
CSV manifest otherwise, with a real checkpoint by default. ``skvlm sites
MODEL`` lists what a model offers. Errors print one line on stderr (a
traceback only with ``--debug``); the exit status is 0 on success, 1 on an
error, 2 on bad arguments and 130 on Ctrl-C.

Only the standard library is imported here at start-up: ``skvlm --help``
answers without loading torch or transformers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

#: What ``skvlm probe`` runs on with no arguments (sized for ``make demo``).
DEMO_MODEL = "skvlm/tiny-llava"
DEMO_ZERO_SHOT_MODEL = "skvlm/tiny-clip"
DEMO_N_PER_CLASS = 50
DEMO_VARIATION = 0.5
#: The model with --data and no --model: the estimators' default (a real
#: checkpoint; offline, its error names the embedded models).
REAL_MODEL = "openai/clip-vit-base-patch32"
#: ``skvlm tune``'s model with --data and no --model: the paper's generative VLM.
REAL_TUNE_MODEL = "llava-hf/llava-1.5-7b-hf"


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
        with warnings.catch_warnings(), _quiet_libraries(args):
            args.run(args)
    except KeyboardInterrupt:
        print("skvlm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        if "on_error" in message and hasattr(args, "on_error"):
            message = _command_line_fix(message, args)
        print(f"skvlm {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


def _command_line_fix(message, args):
    """An image error's Python advice (``on_error='nan'``) in the command's terms."""
    choices = " or ".join(f"--on-error {c}" for c in args.on_error_choices[1:])
    fix = f"pass {choices} to go on without it"
    message = re.sub(r"\(?(pass )?on_error='(nan|skip)'[^.;)]*\)?", fix, message)
    return message


# -- arguments ------------------------------------------------------------------
def _common(parser, demo_model, on_error=("raise", "skip")):
    parser.set_defaults(demo_model=demo_model, on_error_choices=on_error)
    parser.add_argument(
        "--model",
        default=None,
        help="model id, local directory or shipped name (default: the embedded "
        f"demo model {demo_model} without --data, else {REAL_MODEL})",
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
    parser.add_argument(
        "--on-error",
        choices=on_error,
        default="raise",
        help="an unreadable image: stop with its name (raise, default), leave it "
        "out with its label (skip)"
        + (", or keep it as a row of NaN (nan)" if "nan" in on_error else ""),
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars and no notes"
    )
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
    _common(zero, DEMO_ZERO_SHOT_MODEL)
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
    _add_extract(sub)
    _add_sites(sub)
    _tune_parser(sub)
    return parser


def _add_extract(sub):
    ext = sub.add_parser(
        "extract",
        help="write one site's features to a .npy or Parquet file",
        description="Extract the features of one site (stage, layers, pooling) "
        "of every image and write them to --out: a .npy matrix with a "
        "<name>.rows.csv of the images and labels beside it, or a Parquet table "
        "with image, label and one column per feature.",
    )
    _common(ext, DEMO_MODEL, on_error=("raise", "nan", "skip"))
    ext.add_argument("--stage", default="vision")
    ext.add_argument(
        "--layers", default="-1", help="comma-separated layers, or all (default: -1)"
    )
    ext.add_argument("--pooling", default="auto", help="one pooling (default: auto)")
    ext.add_argument("--prompt", default=None, help="language-stage instruction")
    ext.add_argument(
        "--out", required=True, help="the file to write: .npy, or .parquet / .pq"
    )
    ext.set_defaults(run=run_extract)


def _add_sites(sub):
    sites = sub.add_parser(
        "sites",
        help="list a model's stages, layers, poolings and widths",
        description="List every (stage, layer, pooling) site a model offers and "
        "the width of its features, without loading its weights (the same as "
        "skvlm.models.describe_sites(MODEL) in Python).",
    )
    sites.add_argument("model", help="model id, local directory or shipped name")
    sites.add_argument(
        "--format",
        choices=("table", "csv"),
        default="table",
        help="a summary per stage (table, default) or one row per site (csv)",
    )
    sites.add_argument(
        "--debug", action="store_true", help="show the traceback of an error"
    )
    sites.set_defaults(run=run_sites, quiet=True, threads=None)


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
@contextlib.contextmanager
def _quiet_libraries(args):
    """The libraries' logging and bars as the command wants them, restored after.

    ``main`` is also called as a function (tests, notebooks): the process keeps
    its settings.
    """
    import transformers

    from .models import EmbeddedModelWarning

    hf_logging = transformers.utils.logging
    restore = [
        (hf_logging.set_verbosity, hf_logging.get_verbosity()),
        (
            lambda on: (
                hf_logging.enable_progress_bar()
                if on
                else hf_logging.disable_progress_bar()
            ),
            hf_logging.is_progress_bar_enabled(),
        ),
    ]
    if args.threads is not None:
        import torch

        restore.append((torch.set_num_threads, torch.get_num_threads()))
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    if args.quiet:  # else the estimators show HF's bars while a model loads
        hf_logging.disable_progress_bar()
    try:  # the hub's retry notices would break the one-line error contract
        import huggingface_hub

        hub_logging = huggingface_hub.utils.logging
        restore.append((hub_logging.set_verbosity, hub_logging.get_verbosity()))
        hub_logging.set_verbosity_error()
    except (ImportError, AttributeError):
        pass
    # The command says itself when it uses an embedded model (_model).
    warnings.simplefilter("ignore", EmbeddedModelWarning)
    if args.quiet:
        warnings.simplefilter("ignore")
    try:
        yield
    finally:
        for setter, value in reversed(restore):
            setter(value)


def _say(args, text):
    if not args.quiet:
        print(text, file=sys.stderr)


def _model(args):
    """The model to run: --model, else the demo model (no --data) or a real one.

    Says so when the model is one of the embedded demo models.
    """
    from .models import shipped_models

    model = args.model
    if model is None:
        model = args.demo_model if args.data is None else REAL_MODEL
    if model in shipped_models():
        use = "the demo" if args.data is None else "a try-out: on your images"
        _say(
            args,
            f"Note: {model} is an embedded demo model (tiny, trained on digit "
            f"images), fine for {use}"
            + (" its features mean little" if args.data is not None else "")
            + f"; pass --model for a real checkpoint, e.g. --model {REAL_MODEL}.",
        )
    return model


def _drop_unreadable(args, X, y):
    """``(X, y)`` without the images that cannot be read, under --on-error skip."""
    if args.on_error != "skip":
        return X, y
    from ._inputs import ImageLoadError, load_image

    kept, failed = [], []
    for i, item in enumerate(X):
        try:
            load_image(item, i)
            kept.append(i)
        except ImageLoadError as exc:
            failed.append(str(exc))
    if failed:
        if not kept:
            raise CLIError(f"every image is unreadable, e.g. {failed[0]}")
        shown = "; ".join(failed[:3]) + (" ..." if len(failed) > 3 else "")
        print(
            f"skipped {len(failed)} unreadable image(s) (--on-error skip): {shown}",
            file=sys.stderr,
        )
    return [X[i] for i in kept], [y[i] for i in kept]


class _StoreReport:
    """How many images a run took from the feature store and how many it computed.

    Counts the store's entries (one per image and stage) before and after.
    """

    def __init__(self, cache):
        self.path = None if cache is None else Path(cache)
        self.before = self._entries()

    def _entries(self):
        if self.path is None or not self.path.is_dir():
            return 0
        from .store import FeatureStore

        return FeatureStore(self.path).info()["entries"]

    def say(self, args, n_images, n_stages=1, n_failed=0):
        if self.path is None:
            return
        computed = self._entries() - self.before
        asked = n_images * n_stages
        served = max(asked - computed - n_failed * n_stages, 0)
        unit = "images" if n_stages == 1 else f"image passes ({n_stages} stages)"
        if computed == 0:
            text = (
                f"All {served} {unit} came from the feature store at {self.path}: "
                "no forward pass ran."
            )
        else:
            text = (
                f"{served} of {asked} {unit} came from the feature store at "
                f"{self.path}; {computed} ran through the model and were stored."
            )
        _say(args, text)


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
    if not (path.is_dir() or path.suffix.lower() == ".csv"):
        raise CLIError(
            f"--data {args.data!r} is neither a folder nor a .csv file; give a "
            "folder of class subfolders or a CSV with image,label columns."
        )
    loader = load_image_folder if path.is_dir() else load_image_csv
    on_error = getattr(args, "on_error", "raise")
    if on_error == "nan":  # keep every file: the estimator gives NaN rows
        checks = {"on_error": "raise", "verify": False}
    else:
        checks = {"on_error": on_error}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        data = loader(path, **checks)
    for warning in caught:  # skipped files are said even with --quiet
        print(" ".join(str(warning.message).split()), file=sys.stderr)
    what = f"{len(data.data)} images in {len(data.target_names)} classes from {path}"
    return data.data, data.target, [str(n) for n in data.target_names], what


# -- subcommands -------------------------------------------------------------------
def run_probe(args):
    """``skvlm probe``: probe_layers, a compact table, and the report folder."""
    from ._embedding import VLMEmbeddingTransformer
    from .probing import probe_layers

    X, y, _, what = _load_data(args)
    X, y = _drop_unreadable(args, X, y)
    stages = _csv(args.stage, "stage")
    model = _model(args)
    _say(args, f"Probing {model} on {what}.")
    store = _StoreReport(args.cache)
    vlm = VLMEmbeddingTransformer(
        model,
        cache=args.cache,
        prompt=args.prompt,
        batch_size=args.batch_size,
        device=args.device,
    )
    names = vlm.get_params()
    vlm.set_params(
        **(
            {"verbose": int(not args.quiet)}
            if "verbose" in names
            else {"progress": not args.quiet}
        )
    )
    report = probe_layers(
        vlm,
        X,
        y,
        stages="all" if stages == "all" else [str(s) for s in stages],
        layers=_csv(args.layers, "layers", ints=True),
        poolings=_csv(args.pooling, "pooling"),
        cv=args.cv,
        scoring=args.scoring,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
    )
    store.say(args, len(X), n_stages=report.results["param_stage"].nunique())
    paths = report.save(args.out)
    print(report.to_text())
    best = report.best_params_
    print(
        f"best: {best['stage']} layer {best['layer']} {best['pooling']} "
        f"({report.best_['mean_test_score']:.3f}); report in "
        f"{os.path.relpath(paths['html'])}"
    )


def run_zero_shot(args):
    """``skvlm zero-shot``: CLIP zero-shot accuracy, overall and per class."""
    import numpy as np
    from sklearn.metrics import accuracy_score

    from .classifiers import CLIPZeroShotClassifier

    X, y, names, what = _load_data(args)
    X, y = _drop_unreadable(args, X, y)
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
    model = _model(args)
    _say(args, f"Zero-shot {model} on {what}.")
    store = _StoreReport(args.cache)
    clf = CLIPZeroShotClassifier(
        model,
        class_names=names,
        templates=templates,
        batch_size=args.batch_size,
        device=args.device,
        cache=args.cache,
        progress=not args.quiet,
    )
    pred = clf.fit(X, y).predict(X)
    store.say(args, len(X))
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

    from .inspection import groups_from_feature_names, permutation_importance
    from .probing import default_probe

    X, y, _, what = _load_data(args)
    X, y = _drop_unreadable(args, X, y)
    model = _model(args)
    _say(args, f"Importance of {model} {args.stage} features on {what}.")
    store = _StoreReport(args.cache)
    vlm = _site_transformer(args, model)
    features = vlm.fit_transform(X)
    store.say(args, len(X))
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
    accuracy = probe.score(F_test, y_test)
    print(f"probe test accuracy: {accuracy:.3f}")
    if np.all(dims.importances == 0):
        print(_why_no_importance(probe, F_test, y_test, accuracy, len(names)))
    else:
        print(
            f"top {args.top_k} of {len(names)} dimensions (accuracy drop when "
            "permuted):"
        )
        print(top.head(args.top_k).to_string(index=False, float_format="%.4f"))
    print("by layer (all dimensions of a layer permuted together):")
    print(layer_table.to_string(index=False, float_format="%.4f"))
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        top.to_csv(out / "importance_dims.csv", index=False)
        layer_table.to_csv(out / "importance_layers.csv", index=False)


def _why_no_importance(probe, F_test, y_test, accuracy, n_features):
    """Say why permuting no dimension changed the probe's test accuracy."""
    import numpy as np

    y_test = np.asarray(y_test)
    pred = probe.predict(F_test)
    classes, counts = np.unique(y_test, return_counts=True)
    chance = counts.max() / len(y_test)
    head = (
        f"Every one of the {n_features} dimensions has importance 0: permuting "
        "any one of them alone changed no test prediction, "
    )
    if len(np.unique(pred)) == 1:
        why = (
            f"because the probe predicts one class ({pred[0]!r}) for every test "
            "image, so there is nothing to change. It learned nothing usable from "
            "these features: try another --stage, --layers or --pooling (skvlm "
            "probe compares them all), or more images per class."
        )
    elif accuracy <= chance + 1 / len(y_test):
        why = (
            f"and the probe is at chance (accuracy {accuracy:.3f}, chance "
            f"{chance:.3f}): its predictions do not depend on any one dimension. "
            "Try another --stage, --layers or --pooling (skvlm probe compares "
            "them all), or more images per class."
        )
    else:
        why = (
            f"although the probe is above chance ({accuracy:.3f} vs {chance:.3f}): "
            "its margins are wide and the information is spread over many "
            f"dimensions, so no single one moves a prediction; with {len(y_test)} "
            f"test images accuracy moves in steps of {1 / len(y_test):.3f}. The "
            "by-layer table below permutes whole layers; more test images "
            "(--test-size, --n-per-class) give finer steps."
        )
    return head + why


def _site_transformer(args, model):
    """The VLMEmbeddingTransformer of --stage, --layers and --pooling."""
    from ._embedding import VLMEmbeddingTransformer
    from .models import load_adapter

    layers = _csv(args.layers, "layers", ints=True)
    if layers == "all":
        adapter = load_adapter(model, device=args.device)
        if args.stage not in adapter.stages:
            raise CLIError(
                f"--stage {args.stage!r} is not a stage of {model}; its stages "
                f"are {list(adapter.stages)}."
            )
        layers = list(range(adapter.n_layers(args.stage)))
    pooling = _csv(args.pooling, "pooling")
    if pooling == "all" or len(pooling) != 1:
        raise CLIError("--pooling takes one pooling name (or auto), not a list.")
    return VLMEmbeddingTransformer(
        model,
        stage=args.stage,
        layer=layers,
        pooling=pooling[0],
        prompt=args.prompt,
        batch_size=args.batch_size,
        device=args.device,
        cache=args.cache,
        progress=not args.quiet,
        on_error="raise" if args.on_error == "raise" else "nan",
    )


def run_extract(args):
    """``skvlm extract``: one site's features of every image, to .npy or Parquet."""
    import numpy as np
    import pandas as pd

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".parquet", ".pq"):
        raise CLIError(
            f"--out {args.out!r} must end in .npy (a matrix) or .parquet / .pq (a "
            "table)."
        )
    if suffix != ".npy":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CLIError(
                "writing Parquet needs pyarrow: pip install pyarrow (or write .npy)."
            ) from None
    X, y, names, what = _load_data(args)
    model = _model(args)
    _say(args, f"Extracting {model} {args.stage} features of {what}.")
    store = _StoreReport(args.cache)
    vlm = _site_transformer(args, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # failed rows: reported below
        features = vlm.fit_transform(X)
    failed = np.flatnonzero(np.isnan(features).all(axis=1))
    store.say(args, len(X), n_failed=len(failed))
    rows = pd.DataFrame(
        {
            "image": [_image_label(item, i) for i, item in enumerate(X)],
            "label": [names[int(t)] for t in y],
        }
    )
    if len(failed):
        shown = ", ".join(rows["image"].iloc[failed[:5]].astype(str))
        action = "left out" if args.on_error == "skip" else "written as NaN rows"
        print(
            f"{len(failed)} unreadable image(s) {action} (--on-error "
            f"{args.on_error}): {shown}{' ...' if len(failed) > 5 else ''}",
            file=sys.stderr,
        )
        if args.on_error == "skip":
            keep = np.setdiff1d(np.arange(len(X)), failed)
            features, rows = features[keep], rows.iloc[keep].reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(out, features)
        index = out.with_name(out.stem + ".rows.csv")
        rows.to_csv(index, index=False)
        written = f"{out} and {index}"
    else:
        columns = pd.DataFrame(features, columns=vlm.get_feature_names_out())
        pd.concat([rows, columns], axis=1).to_parquet(out, index=False)
        written = str(out)
    print(
        f"{features.shape[0]} x {features.shape[1]} float32 features "
        f"({', '.join(vlm.get_feature_names_out()[[0, -1]])}) written to {written}"
    )


def _image_label(item, index):
    """How a row names its image: the path, or its index for in-memory images."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"X[{index}]"


def run_sites(args):
    """``skvlm sites MODEL``: the stages, layers, poolings and widths of a model."""
    from .models import describe_sites

    sites = describe_sites(args.model)
    if args.format == "csv":
        print(sites.to_csv(index=False), end="")
        return
    print(f"{args.model} ({sites.attrs['family']}): {len(sites)} sites")
    print(f"{'stage':<10} {'layers':<7} {'dim':>5}  {'auto':<7} poolings")
    for stage, info in sites.attrs["stages"].items():
        here = sites[sites["stage"] == stage]
        poolings = []
        for pooling in dict.fromkeys(here["pooling"]):
            at = here.loc[here["pooling"] == pooling, "layer"].tolist()
            where = "" if len(at) == info["n_layers"] else f" (layer {_span(at)})"
            poolings.append(f"{pooling}{where}")
        if info["max_position"] is not None:
            bound = info["max_position"]
            poolings.append(f"int positions {-bound - 1}..{bound}")
        print(
            f"{stage:<10} {_span(range(info['n_layers'])):<7} {info['dim']:>5}  "
            f"{info['auto_pooling']:<7} {', '.join(poolings)}"
        )


def _span(layers):
    layers = list(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


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
        f"inside --out. With --data and no --model it tunes {REAL_TUNE_MODEL}.",
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
    X, y = _drop_unreadable(args, X, y)
    y = np.asarray(y)
    if args.model is None and args.data is not None:
        args.model = REAL_TUNE_MODEL
    model = _model(args)
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
        f"Fine-tuning {model} ({args.train}, {args.objective}) on "
        f"{len(train)} of {what}; {len(test)} held out.",
    )
    tuner = VLMClassificationTuner(
        model,
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
    _say(args, f"Comparing {model} with the tuned model on the held-out images.")
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
