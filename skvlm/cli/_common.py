"""What every sub-command shares: its common options, the data, the model, notes.

Only the standard library is imported at module level: ``skvlm --help``
answers without loading torch or transformers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

#: What the commands run on with no arguments (sized for ``make demo``).
DEMO_MODEL = "skvlm/tiny-llava"
DEMO_ZERO_SHOT_MODEL = "skvlm/tiny-clip"
DEMO_N_PER_CLASS = 50
DEMO_VARIATION = 0.5
#: The model with --data and no --model: the estimators' default (a real
#: checkpoint; offline, its error names the embedded models).
REAL_MODEL = "openai/clip-vit-base-patch32"
#: The generative model with --data and no --model (``skvlm tune``): the
#: paper's generative VLM.
REAL_GENERATIVE_MODEL = "llava-hf/llava-1.5-7b-hf"


class CLIError(Exception):
    """A usage problem found after parsing (printed as one line)."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default appended, as in ``--help``.

    ``ArgumentDefaultsHelpFormatter`` also prints ``(default: None)`` and
    ``(default: False)``; an option whose default is "not given" says in its
    own words what happens then, and a flag has no default to show.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" in text
            or "(default" in text
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


def int_at_least(minimum):
    """An argparse ``type``: an int of ``minimum`` or more."""

    def parse(text):
        value = int(text)  # a ValueError reads "invalid int value: 'x'"
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is too small: give an integer of {minimum} or more"
            )
        return value

    parse.__name__ = "int"
    return parse


def fraction(text):
    """An argparse ``type``: a float in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


fraction.__name__ = "float"


def check_folds(args, y):
    """Refuse a --cv with more folds than the smallest class has images."""
    import numpy as np

    smallest = int(np.unique(np.asarray(y), return_counts=True)[1].min())
    if args.cv > smallest:
        raise CLIError(
            f"--cv {args.cv} needs at least {args.cv} images of each class, and "
            f"the smallest class has {smallest}: give more images per class (with "
            "the embedded data, --n-per-class) or fewer folds (--cv)."
        )


def add_output_options(parser):
    """--verbose, --quiet and --debug: how much a command says."""
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="0: only results and errors; 1: progress bars and notes; 2: also a "
        "line per batch",
    )
    parser.add_argument(
        "--quiet",
        dest="verbose",
        action="store_const",
        const=0,
        help="the same as --verbose 0",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error"
    )


def add_common_options(
    parser,
    demo_model,
    real_model=REAL_MODEL,
    on_error=("raise", "skip"),
    batch_size=32,
    batch_size_help="images per forward pass",
):
    """The options of every command that runs a model on images."""
    parser.set_defaults(
        demo_model=demo_model, real_model=real_model, on_error_choices=on_error
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model id, local directory or shipped name (default: the embedded "
        f"demo model {demo_model} without --data, else {real_model})",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="a folder with one subfolder per class, or a CSV with image,label "
        "columns (default: the embedded digit images)",
    )
    parser.add_argument(
        "--n-per-class",
        type=int_at_least(1),
        default=DEMO_N_PER_CLASS,
        help="embedded data only: images per digit",
    )
    parser.add_argument(
        "--variation",
        type=fraction,
        default=DEMO_VARIATION,
        help="embedded data only: augmentation strength in [0, 1]",
    )
    parser.add_argument(
        "--cache",
        default=None,
        help="feature store directory: features computed once are read back "
        "from it (default: none, every run computes its features)",
    )
    uses = {
        "raise": "stop with its name (raise)",
        "skip": "leave it out with its label (skip)",
        "nan": "keep it as a row of NaN (nan)",
    }
    parser.add_argument(
        "--on-error",
        choices=on_error,
        default="raise",
        help="an unreadable image: " + ", ".join(uses[c] for c in on_error),
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N, mps or auto"
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=batch_size,
        help=batch_size_help,
    )
    parser.add_argument(
        "--threads",
        type=int_at_least(1),
        default=None,
        help="torch CPU threads (default: torch's choice)",
    )
    add_output_options(parser)


def csv_list(value, name, *, ints=False):
    """A comma-separated option as a list (``"all"`` kept), checked."""
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


def verbosity(args, target):
    """``--verbose`` as ``target`` takes it: ``verbose=`` (int), or ``progress=``.

    ``target`` is the estimator class or function called. The shared
    vocabulary's ``verbose`` replaces the older boolean ``progress``; this
    passes whichever ``target`` declares, so the command does not trip a
    deprecation warning while both exist.
    """
    import inspect

    if "verbose" in inspect.signature(target).parameters:
        return {"verbose": args.verbose}
    return {"progress": args.verbose > 0}


# -- shared steps -----------------------------------------------------------------
@contextlib.contextmanager
def quiet_libraries(args):
    """The libraries' logging and bars as the command wants them, restored after.

    ``main`` is also called as a function (tests, notebooks): the process keeps
    its settings.
    """
    import transformers

    from ..models import EmbeddedModelWarning

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
    if getattr(args, "threads", None) is not None:
        import torch

        restore.append((torch.set_num_threads, torch.get_num_threads()))
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    if args.verbose == 0:  # else the estimators show HF's bars while a model loads
        hf_logging.disable_progress_bar()
    try:  # the hub's retry notices would break the one-line error contract
        import huggingface_hub

        hub_logging = huggingface_hub.utils.logging
        restore.append((hub_logging.set_verbosity, hub_logging.get_verbosity()))
        hub_logging.set_verbosity_error()
    except (ImportError, AttributeError):
        pass
    # The command says itself when it uses an embedded model (choose_model).
    warnings.simplefilter("ignore", EmbeddedModelWarning)
    if args.verbose == 0:
        warnings.simplefilter("ignore")
    try:
        yield
    finally:
        for setter, value in reversed(restore):
            setter(value)


def say(args, text):
    """A note on stderr, unless --verbose 0."""
    if args.verbose > 0:
        print(text, file=sys.stderr)


def choose_model(args):
    """The model to run: --model, else the demo model (no --data) or a real one.

    Says so when the model is one of the embedded demo models.
    """
    from ..models import shipped_models

    model = args.model
    if model is None:
        model = args.demo_model if args.data is None else args.real_model
    if model in shipped_models():
        use = "the demo" if args.data is None else "a try-out: on your images"
        say(
            args,
            f"Note: {model} is an embedded demo model (tiny, trained on digit "
            f"images), fine for {use}"
            + (" its features mean little" if args.data is not None else "")
            + f"; pass --model for a real checkpoint, e.g. --model {args.real_model}.",
        )
    return model


def drop_unreadable(args, X, y):
    """``(X, y)`` without the images that cannot be read, under --on-error skip."""
    if args.on_error != "skip":
        return X, y
    from .._inputs import ImageLoadError, load_image

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


class StoreReport:
    """How many images a run took from the feature store and how many it computed.

    Counts the store's entries (one per image and stage) before and after.
    """

    def __init__(self, cache):
        self.path = None if cache is None else Path(cache)
        self.before = self.entries()

    def entries(self):
        if self.path is None or not self.path.is_dir():
            return 0
        from ..store import FeatureStore

        return FeatureStore(self.path).info()["entries"]

    def say(self, args, n_images, n_stages=1, n_failed=0):
        if self.path is None:
            return
        computed = self.entries() - self.before
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
        say(args, text)


def load_data(args):
    """(images, labels, class names, description) from --data or the embedded set."""
    from ..datasets import load_digit_images, load_image_csv, load_image_folder

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
    for warning in caught:  # skipped files are said even with --verbose 0
        print(" ".join(str(warning.message).split()), file=sys.stderr)
    what = f"{len(data.data)} images in {len(data.target_names)} classes from {path}"
    return data.data, data.target, [str(n) for n in data.target_names], what


def class_names(args, y, names):
    """The class names: --class-names, checked against the labels, else ``names``."""
    import numpy as np

    n_classes = len(np.unique(y))
    if args.class_names is None:
        return names
    given = [n.strip() for n in args.class_names.split(",")]
    if len(given) != n_classes:
        raise CLIError(
            f"--class-names gives {len(given)} names for {n_classes} classes; "
            "give one name per class, in sorted label order."
        )
    return given


def check_split(args, y):
    """Refuse a --test-size whose stratified split cannot hold every class."""
    import math

    import numpy as np

    if not 0 < args.test_size < 1:
        raise CLIError(f"--test-size {args.test_size} must be between 0 and 1.")
    n, n_classes = len(y), len(np.unique(y))
    n_test = math.ceil(args.test_size * n)
    if n_test < n_classes or n - n_test < n_classes:
        raise CLIError(
            f"--test-size {args.test_size} splits the {n} images into {n - n_test} "
            f"for training and {n_test} held out, but each part needs an image of "
            f"each of the {n_classes} classes: give more images per class (with "
            "the embedded data, --n-per-class) or another --test-size."
        )


def add_site_options(parser, *, layers_default, layers_help):
    """--stage, --layers, --pooling and --prompt of a one-site command."""
    parser.add_argument(
        "--stage",
        default="vision",
        help="the stage whose features are used: vision, projector or language "
        "(skvlm sites MODEL lists a model's stages)",
    )
    parser.add_argument("--layers", default=layers_default, help=layers_help)
    parser.add_argument(
        "--pooling",
        default="auto",
        help="one pooling: auto (the stage's default), cls, mean, last, ... or "
        "an int token position (skvlm sites MODEL lists them)",
    )
    parser.add_argument(
        "--prompt",
        default=None,
        help="the instruction sent with each image to the language stage "
        "(default: the family's own)",
    )


def site_transformer(args, model):
    """The VLMEmbeddingTransformer of --stage, --layers and --pooling."""
    from .. import VLMEmbeddingTransformer
    from ..models import load_adapter

    layers = csv_list(args.layers, "layers", ints=True)
    if layers == "all":
        adapter = load_adapter(model, device=args.device)
        if args.stage not in adapter.stages:
            raise CLIError(
                f"--stage {args.stage!r} is not a stage of {model}; its stages "
                f"are {list(adapter.stages)}."
            )
        layers = list(range(adapter.n_layers(args.stage)))
    pooling = csv_list(args.pooling, "pooling")
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
        on_error="raise" if args.on_error == "raise" else "nan",
        **verbosity(args, VLMEmbeddingTransformer),
    )


def image_label(item, index):
    """How a row names its image: the path, or its index for in-memory images."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"X[{index}]"
