"""``skvlm tune``: fine-tune a generative VLM, then compare it with the base.

On the shipped demo models the defaults are the recipe of the paper in
miniature (every language-model weight, learning rate 1e-3, the answer in the
tiny models' own words), which is what makes the tuned model beat the base one
on every strategy on the held-out digits; on a real checkpoint they are the
paper's LoRA recipe.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ._common import (
    DEMO_MODEL,
    REAL_GENERATIVE_MODEL,
    CLIError,
    add_common_options,
    check_split,
    choose_model,
    class_names,
    csv_list,
    drop_unreadable,
    fraction,
    int_at_least,
    load_data,
    say,
    verbosity,
)

#: The tuning settings with a shipped demo model, and with a real checkpoint.
DEMO_RECIPE = {
    "train": "full",
    "learning_rate": 1e-3,
    "epochs": 10,
    "batch_size": 32,
    # The tiny models' word-level tokenizer knows "seven" and ".", not "seven."
    "answer_template": "The photo features a {} .",
}
REAL_RECIPE = {
    "train": "lora",
    "learning_rate": 2e-4,
    "epochs": 3,
    "batch_size": 8,
    "answer_template": "The photo features a {}.",
}


def _default(name):
    return (
        f"(default: {DEMO_RECIPE[name]!r} with a shipped demo model, "
        f"{REAL_RECIPE[name]!r} otherwise)"
    )


def add_parser(sub, formatter):
    tune = sub.add_parser(
        "tune",
        formatter_class=formatter,
        help="fine-tune a generative VLM on the images and compare it with the base",
        description="Fine-tune a generative VLM on a training split (LoRA, the "
        "projector or everything; the generation or cross-entropy objective), write "
        "the tuned model, and compare base and tuned on the held-out split: "
        "accuracy per strategy and per class, and a linear probe at every language "
        "layer. Writes accuracy.csv, per_class.csv, probes.csv, report.json, "
        "tuning.png and report.html to --out; the tuned model goes to a run-<key> "
        "folder inside it. With no arguments it tunes the shipped "
        f"{DEMO_MODEL} on the embedded digits; with --data and no --model it "
        f"tunes {REAL_GENERATIVE_MODEL}. The model must generate text (LLaVA, "
        "Qwen-VL, PaliGemma, ...): a CLIP or SigLIP cannot answer (see skvlm "
        "families).",
    )
    add_common_options(
        tune,
        DEMO_MODEL,
        REAL_GENERATIVE_MODEL,
        batch_size=None,
        batch_size_help=f"images per training and scoring batch {_default('batch_size')}",
    )
    tune.add_argument(
        "--class-names",
        default=None,
        help="comma-separated names, one per class in sorted label order: the "
        "words the model learns to answer (default: the labels)",
    )
    tune.add_argument(
        "--objective",
        default="generation",
        choices=["generation", "cross_entropy"],
        help="generation: learn to answer with the class name; cross_entropy: a "
        "linear head on the last hidden state, trained with the model",
    )
    tune.add_argument(
        "--train",
        default=None,
        choices=["lora", "projector", "full"],
        help="what is updated: LoRA adapters and the projector, the projector "
        f"only, or every language-model weight {_default('train')}",
    )
    tune.add_argument(
        "--learning-rate-init",
        "--learning-rate",
        dest="learning_rate",
        metavar="RATE",
        type=float,
        default=None,
        help=f"initial (peak) learning rate {_default('learning_rate')}",
    )
    tune.add_argument(
        "--max-iter",
        "--epochs",
        dest="epochs",
        metavar="EPOCHS",
        type=int_at_least(1),
        default=None,
        help=f"epochs: passes over the training split {_default('epochs')}",
    )
    tune.add_argument(
        "--lora-r",
        "--lora-rank",
        dest="lora_rank",
        metavar="R",
        type=int_at_least(1),
        default=8,
        help="LoRA rank (--train lora)",
    )
    tune.add_argument(
        "--lora-alpha", type=float, default=16, help="LoRA alpha (--train lora)"
    )
    tune.add_argument(
        "--prompt",
        default=None,
        help="the question asked with each image (default: the family's own)",
    )
    tune.add_argument(
        "--answer-template",
        default=None,
        help="the answer learnt, {} standing for the class name "
        f"{_default('answer_template')}",
    )
    tune.add_argument(
        "--test-size",
        type=fraction,
        default=0.25,
        help="share of the images held out to compare base and tuned on",
    )
    tune.add_argument(
        "--strategies",
        default="probabilistic,open_ended,closed_set",
        help="comma-separated VLMGenerativeClassifier strategies to compare",
    )
    tune.add_argument(
        "--max-new-tokens",
        type=int_at_least(1),
        default=16,
        help="tokens generated per answer (open_ended, closed_set)",
    )
    tune.add_argument(
        "--probe-pooling",
        default="last",
        help="pooling of the per-layer probe curve; 'none' skips the probes",
    )
    tune.add_argument("--cv", type=int_at_least(2), default=3, help="probe folds")
    tune.add_argument(
        "--random-state",
        type=int,
        default=0,
        help="seed of the split, the training order and the probes",
    )
    tune.add_argument(
        "--num-processes",
        type=int_at_least(1),
        default=1,
        help="training processes: N > 1 re-runs this command under python -m "
        "torch.distributed.run --nproc_per_node N (one per GPU); only rank 0 "
        "prints and writes the report",
    )
    tune.add_argument("--out", default="skvlm-tune", help="output folder")
    tune.set_defaults(run=run)


def launch_command(args):
    """This command under ``torch.distributed.run``, one process per --num-processes.

    The arguments are passed on as given, with ``--num-processes 1`` last (the
    last occurrence of an option wins), so that no process launches again.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.num_processes}",
        "-m",
        "skvlm",
        *args.argv,
        "--num-processes",
        "1",
    ]


def is_main_process():
    """Rank 0 of a torchrun launch, or a process launched alone."""
    return int(os.environ.get("RANK", "0")) == 0


def recipe(args, model):
    """The tuning settings: the options given, else the recipe for ``model``."""
    from ..models import shipped_models

    base = DEMO_RECIPE if str(model) in shipped_models() else REAL_RECIPE
    chosen = {}
    for name, value in base.items():
        given = getattr(args, name)
        chosen[name] = value if given is None else given
    return chosen


def check_generative(model):
    """Refuse, before any work, a model that cannot generate text."""
    from ..models import describe_sites

    try:
        sites = describe_sites(model)
    except Exception:  # the tuner's own loading error says it better
        return
    if "language" not in sites.attrs["stages"]:
        raise CLIError(
            f"--model {model} is a {sites.attrs['family']} model: it has no "
            "language model, so it cannot answer with a class name and cannot be "
            "tuned here. Tune a generative VLM (LLaVA, Qwen-VL, PaliGemma, ...; "
            f"e.g. --model {REAL_GENERATIVE_MODEL}); for a CLIP or SigLIP use "
            "skvlm zero-shot or skvlm probe."
        )


def run(args):
    """``skvlm tune``: fine-tune, then compare base and tuned on held-out images."""
    if args.num_processes > 1:
        return subprocess.run(launch_command(args), check=False).returncode
    import numpy as np
    from sklearn.model_selection import train_test_split

    from .._tuning_report import compare_models
    from ..tuning import VLMClassificationTuner

    main_process = is_main_process()
    if not main_process:
        args.verbose = 0
    strategies = csv_list(args.strategies, "strategies")
    X, y, names, what = load_data(args)
    X, y = drop_unreadable(args, X, y)
    y = np.asarray(y)
    model = choose_model(args)
    check_generative(model)
    classes = np.unique(y)
    names = class_names(args, y, names)
    check_split(args, y)
    settings = recipe(args, model)
    rows = np.arange(len(y))
    train, test = train_test_split(
        rows, test_size=args.test_size, stratify=y, random_state=args.random_state
    )
    X_train, X_test = [X[i] for i in train], [X[i] for i in test]
    say(
        args,
        f"Fine-tuning {model} ({settings['train']}, {args.objective}, "
        f"{settings['epochs']} epoch{'s' * (settings['epochs'] != 1)} at learning rate {settings['learning_rate']}) "
        f"on {len(train)} of {what}; {len(test)} held out.",
    )
    tuner = VLMClassificationTuner(
        model,
        objective=args.objective,
        train=settings["train"],
        class_names=dict(zip(classes, names, strict=True)),
        prompt=args.prompt,
        answer_template=settings["answer_template"],
        learning_rate_init=settings["learning_rate"],
        max_iter=settings["epochs"],
        lora__r=args.lora_rank,
        lora__lora_alpha=args.lora_alpha,
        batch_size=settings["batch_size"],
        output_dir=args.out,
        random_state=args.random_state,
        device=args.device,
        verbose=args.verbose,
    ).fit(X_train, y[train])
    say(args, f"Comparing {model} with the tuned model on the held-out images.")
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
        batch_size=settings["batch_size"],
        device=args.device,
        random_state=args.random_state,
        **verbosity(args, compare_models),
    )
    if not main_process:
        return 0
    paths = report.save(args.out)
    print(report.to_text())
    print(
        f"tuned model: {tuner.model_path_} (pass it as --model); report in "
        f"{os.path.relpath(paths['html'])}"
    )
    return 0
