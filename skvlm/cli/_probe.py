"""``skvlm probe``: a linear probe at every (stage, layer, pooling) site."""

from __future__ import annotations

import os

from ._common import (
    DEMO_MODEL,
    StoreReport,
    add_common_options,
    check_folds,
    choose_model,
    csv_list,
    drop_unreadable,
    int_at_least,
    load_data,
    say,
)


def add_parser(sub, formatter):
    probe = sub.add_parser(
        "probe",
        formatter_class=formatter,
        help="cross-validate a linear probe at every layer and pooling",
        description="Cross-validate a linear probe at every (stage, layer, "
        "pooling) site; write results.csv, results.json, probe_layers.png and "
        "report.html to --out.",
    )
    add_common_options(probe, DEMO_MODEL)
    probe.add_argument(
        "--stage",
        default="all",
        help="comma-separated stages (vision, projector, language), or all",
    )
    probe.add_argument(
        "--layers", default="all", help="comma-separated layers (e.g. 0,-1), or all"
    )
    probe.add_argument(
        "--pooling",
        default="all",
        help="comma-separated poolings (cls, mean, last, ...), or all; each is "
        "applied at the stages that offer it",
    )
    probe.add_argument(
        "--cv", type=int_at_least(2), default=5, help="cross-validation folds"
    )
    probe.add_argument(
        "--scoring",
        default=None,
        help="an sklearn scorer name, e.g. balanced_accuracy (default: accuracy)",
    )
    probe.add_argument(
        "--prompt",
        default=None,
        help="the instruction sent with each image to the language stage "
        "(default: the family's own)",
    )
    probe.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="joblib workers fitting the probes (default: one)",
    )
    probe.add_argument(
        "--random-state", type=int, default=0, help="seed of the folds and probes"
    )
    probe.add_argument("--out", default="skvlm-report", help="report folder")
    probe.set_defaults(run=run)


def run(args):
    """``skvlm probe``: probe_layers, a compact table, and the report folder."""
    from .. import VLMEmbeddingTransformer
    from ..probing import probe_layers

    X, y, _, what = load_data(args)
    X, y = drop_unreadable(args, X, y)
    stages = csv_list(args.stage, "stage")
    layers = csv_list(args.layers, "layers", ints=True)
    poolings = csv_list(args.pooling, "pooling")
    check_folds(args, y)
    model = choose_model(args)
    say(args, f"Probing {model} on {what}.")
    store = StoreReport(args.cache)
    searched = dict(
        stages="all" if stages == "all" else [str(s) for s in stages],
        layers=layers,
        poolings=poolings,
        cv=args.cv,
        scoring=args.scoring,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
    )
    site = dict(
        cache=args.cache,
        prompt=args.prompt,
        batch_size=args.batch_size,
        device=args.device,
    )
    # probe_layers takes the estimator whose sites it searches
    vlm = VLMEmbeddingTransformer(model, **site, verbose=args.verbose)
    report = probe_layers(vlm, X, y, **searched)
    store.say(args, len(X), n_stages=report.results["param_stage"].nunique())
    paths = report.save(args.out)
    print(report.to_text())
    best = report.best_params_
    print(
        f"best: {best['stage']} layer {best['layer']} {best['pooling']} "
        f"({_best_score(report):.3f}); report in "
        f"{os.path.relpath(paths['html'])}"
    )


def _best_score(report):
    best = report.best_
    return best["mean_test_score" if "mean_test_score" in best else "mean_score"]
