"""``skvlm importance``: permutation importance of a probe's features."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    DEMO_MODEL,
    StoreReport,
    add_common_options,
    add_site_options,
    check_split,
    choose_model,
    drop_unreadable,
    fraction,
    int_at_least,
    load_data,
    say,
    site_transformer,
)


def add_parser(sub, formatter):
    imp = sub.add_parser(
        "importance",
        formatter_class=formatter,
        help="permutation importance of a probe's features",
        description="Fit a probe at one stage and pooling (on the layers "
        "given, concatenated) on a training split and print the permutation "
        "importance of its top dimensions and of each layer on the test split.",
    )
    add_common_options(imp, DEMO_MODEL)
    add_site_options(
        imp,
        layers_default="all",
        layers_help="comma-separated layers whose features are concatenated "
        "(e.g. 0,-1), or all",
    )
    imp.add_argument(
        "--top-k", type=int_at_least(1), default=10, help="how many dimensions to print"
    )
    imp.add_argument(
        "--n-repeats",
        type=int_at_least(1),
        default=5,
        help="permutations per dimension (their mean and std are printed)",
    )
    imp.add_argument(
        "--test-size",
        type=fraction,
        default=0.25,
        help="share of the images held out to measure the importance on",
    )
    imp.add_argument(
        "--random-state",
        type=int,
        default=0,
        help="seed of the split and the permutations",
    )
    imp.add_argument(
        "--out",
        default=None,
        help="folder for importance_dims.csv and importance_layers.csv "
        "(default: print only)",
    )
    imp.set_defaults(run=run)


def run(args):
    """``skvlm importance``: permutation importance of a probe at one site."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from ..inspection import groups_from_feature_names, permutation_importance
    from ..probing import default_probe

    X, y, _, what = load_data(args)
    X, y = drop_unreadable(args, X, y)
    check_split(args, y)
    model = choose_model(args)
    say(args, f"Importance of {model} {args.stage} features on {what}.")
    store = StoreReport(args.cache)
    vlm = site_transformer(args, model)
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
