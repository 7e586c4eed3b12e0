"""``skvlm extract``: one site's features of every image, to .npy or Parquet."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ._common import (
    DEMO_MODEL,
    CLIError,
    StoreReport,
    add_common_options,
    add_site_options,
    choose_model,
    image_label,
    load_data,
    say,
    site_transformer,
)


def add_parser(sub, formatter):
    ext = sub.add_parser(
        "extract",
        formatter_class=formatter,
        help="write one site's features to a .npy or Parquet file",
        description="Extract the features of one site (stage, layers, pooling) "
        "of every image and write them to --out: a .npy matrix with a "
        "<name>.rows.csv of the images and labels beside it, or a Parquet table "
        "with image, label and one column per feature.",
    )
    add_common_options(ext, DEMO_MODEL, on_error=("raise", "nan", "skip"))
    add_site_options(
        ext,
        layers_default="-1",
        layers_help="comma-separated layers whose features are concatenated "
        "(e.g. 0,-1), or all",
    )
    ext.add_argument(
        "--out",
        required=True,
        help="the file to write: .npy, or .parquet / .pq (required)",
    )
    ext.set_defaults(run=run)


def run(args):
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
    X, y, names, what = load_data(args)
    model = choose_model(args)
    say(args, f"Extracting {model} {args.stage} features of {what}.")
    store = StoreReport(args.cache)
    vlm = site_transformer(args, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # failed rows: reported below
        features = vlm.fit_transform(X)
    failed = np.flatnonzero(np.isnan(features).all(axis=1))
    store.say(args, len(X), n_failed=len(failed))
    rows = pd.DataFrame(
        {
            "image": [image_label(item, i) for i, item in enumerate(X)],
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
