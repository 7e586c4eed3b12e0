"""skvlm.inspection.permutation_importance vs sklearn's, side by side.

Problem: 4096 features x 2000 rows x 10 classes, LogisticRegression,
n_repeats=5, default scoring (accuracy). sklearn's full run takes many
minutes here, so it is timed on a subset of columns through sklearn's own
per-column function (the exact code its public function runs per column,
with the same seed) and extrapolated linearly to all columns; the script
says so in its output. A second case times a non-linear model (general
path) the same way.

Run: python benchmarks/bench_permutation.py [--subset 48]
"""

import argparse
import platform
import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import _permutation_importance as sk_pi
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skvlm.inspection import permutation_importance


def make_problem(n_rows, n_features, n_classes, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_rows, n_features))
    W = (
        rng.normal(size=(n_features, n_classes))
        * (rng.uniform(size=n_features) < 0.05)[:, None]
    )
    y = np.argmax(X @ W + rng.gumbel(size=(n_rows, n_classes)), axis=1)
    return X, y


def sklearn_subset(estimator, X, y, cols, n_repeats, random_state):
    """sklearn's per-column work for `cols` only: returns (seconds, importances)."""
    seed = np.random.RandomState(random_state).randint(np.iinfo(np.int32).max + 1)
    scorer = check_scoring(estimator)
    start = time.perf_counter()
    baseline = scorer(estimator, X, y)
    scores = np.array(
        [
            sk_pi._calculate_permutation_scores(
                estimator, X, y, None, j, seed, n_repeats, scorer, X.shape[0]
            )
            for j in cols
        ]
    )
    return time.perf_counter() - start, baseline - scores


def compare(label, estimator, X, y, n_subset, n_repeats=5, random_state=0):
    n_features = X.shape[1]
    start = time.perf_counter()
    ours = permutation_importance(
        estimator, X, y, n_repeats=n_repeats, random_state=random_state
    )
    t_ours = time.perf_counter() - start
    cols = np.linspace(0, n_features - 1, n_subset).astype(int)
    t_sub, ref = sklearn_subset(estimator, X, y, cols, n_repeats, random_state)
    t_sklearn = t_sub * n_features / n_subset
    max_diff = np.abs(ours.importances[cols] - ref).max()
    print(f"\n== {label}")
    print(
        f"sklearn: {t_sub:.2f} s for {n_subset} of {n_features} columns -> "
        f"{t_sklearn:.1f} s extrapolated linearly to all columns"
    )
    print(f"skvlm:   {t_ours:.2f} s for all {n_features} columns")
    print(
        f"speed-up: {t_sklearn / t_ours:.0f}x   max |difference| on the subset: {max_diff:.1e}"
    )
    return t_sklearn / t_ours, max_diff


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subset", type=int, default=48)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}"
    )

    X, y = make_problem(2000, 4096, 10)
    start = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X, y)
    print(f"fitted the pipeline in {time.perf_counter() - start:.1f} s")
    compare(
        "linear path: StandardScaler + LogisticRegression, 4096 x 2000 x 10 classes",
        clf[-1],
        X,
        y,
        args.subset,
    )
    compare(
        "linear path through a Pipeline (scaler folded into the weights)",
        clf,
        X,
        y,
        args.subset,
    )
    Xs, ys = make_problem(500, 128, 10, seed=1)
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(Xs, ys)
    compare(
        "general path: RandomForestClassifier(20 trees), 128 x 500 x 10 classes",
        forest,
        Xs,
        ys,
        16,
    )


if __name__ == "__main__":
    # One BLAS thread for both sides: on a shared 2-core machine multi-threaded
    # BLAS spins and distorts whichever side runs more small products.
    with threadpool_limits(limits=1):
        main()
