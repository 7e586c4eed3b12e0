"""``skvlm zero-shot``: CLIP / SigLIP zero-shot accuracy."""

from __future__ import annotations

import warnings

from ._common import (
    DEMO_ZERO_SHOT_MODEL,
    CLIError,
    StoreReport,
    add_common_options,
    choose_model,
    class_names,
    drop_unreadable,
    load_data,
    say,
    verbosity,
)


def add_parser(sub, formatter):
    zero = sub.add_parser(
        "zero-shot",
        formatter_class=formatter,
        help="CLIP / SigLIP zero-shot accuracy",
        description="Classify the images by similarity to class-name prompts "
        "and print the accuracy, overall and per class.",
    )
    add_common_options(zero, DEMO_ZERO_SHOT_MODEL)
    zero.add_argument(
        "--class-names",
        default=None,
        help="comma-separated names, one per class in sorted label order "
        "(default: the labels; give names when the labels are numbers)",
    )
    zero.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template with {} for the class name; repeat to ensemble "
        "(default: 'a photo of the digit {}.' on the embedded data, else "
        "'a photo of a {}.')",
    )
    zero.set_defaults(run=run)


def run(args):
    """``skvlm zero-shot``: CLIP zero-shot accuracy, overall and per class."""
    import numpy as np
    from sklearn.metrics import accuracy_score

    from ..classifiers import CLIPZeroShotClassifier

    X, y, names, what = load_data(args)
    X, y = drop_unreadable(args, X, y)
    names = class_names(args, y, names)
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
    if all(str(n).strip().lstrip("-").isdigit() for n in names):
        # The classifier's warning, in the command's terms.
        warnings.filterwarnings("ignore", "The class names are numbers")
        say(
            args,
            f"Note: the class names are numbers ({', '.join(map(str, names[:3]))}"
            f", ...): the prompts read {templates[0].format(names[0])!r}, which "
            "names nothing the model can match, so accuracy stays near chance. "
            "Pass --class-names with a name per class in sorted label order, "
            "e.g. --class-names cat,dog,bird.",
        )
    model = choose_model(args)
    say(args, f"Zero-shot {model} on {what}.")
    store = StoreReport(args.cache)
    clf = CLIPZeroShotClassifier(
        model,
        class_names=names,
        templates=templates,
        batch_size=args.batch_size,
        device=args.device,
        cache=args.cache,
        **verbosity(args, CLIPZeroShotClassifier),
    )
    pred = clf.fit(X, y).predict(X)
    store.say(args, len(X))
    y = np.asarray(y)
    width = max(12, *(len(str(n)) for n in names))
    print(f"{'class':>{width}} {'n':>5} accuracy")
    for label, name in zip(clf.classes_, names, strict=True):
        mask = y == label
        print(
            f"{name:>{width}} {int(mask.sum()):>5} "
            f"{accuracy_score(y[mask], pred[mask]):.3f}"
        )
    chance = np.bincount(np.unique(y, return_inverse=True)[1]).max() / len(y)
    print(
        f"zero-shot accuracy: {accuracy_score(y, pred):.3f} (chance {chance:.3f}, "
        f"templates {templates})"
    )
