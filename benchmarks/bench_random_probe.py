"""RandomProbeSelector vs feature-engine's ProbeFeatureSelection(collective=False).

Synthetic classification: 768 features x 1000 rows, the first 24 columns
informative (make_classification with shuffle=False), the rest noise. Both
selectors use LogisticRegression, the same probe kind, number of probes,
threshold rule and CV folds; both run in this process, one after the other, with one BLAS thread.
Prints time, recall of the informative columns, and noise columns kept.

Run: python benchmarks/bench_random_probe.py
"""

import platform
import time
import warnings

import numpy as np
import pandas as pd
from feature_engine.selection import ProbeFeatureSelection
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from skvlm.selection import RandomProbeSelector

N_ROWS, N_FEATURES, N_INFORMATIVE = 1000, 768, 24
COMMON = dict(n_probes=20, distribution="normal", threshold="mean_plus_std", cv=3)


def report(label, seconds, kept):
    informative = set(range(N_INFORMATIVE))
    recall = len(informative & kept) / N_INFORMATIVE
    noise = len(kept - informative)
    print(f"{label:<44} {seconds:8.2f} s  recall {recall:.3f}  noise kept {noise}")
    return recall


def main():
    print(f"machine: {platform.machine()}, numpy {np.__version__}")
    X, y = make_classification(
        n_samples=N_ROWS,
        n_features=N_FEATURES,
        n_informative=N_INFORMATIVE,
        n_redundant=0,
        shuffle=False,
        random_state=0,
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_FEATURES)])
    estimator = LogisticRegression(C=0.01, max_iter=1000)
    print(
        f"{N_FEATURES} features x {N_ROWS} rows, {N_INFORMATIVE} informative; {COMMON}"
    )

    start = time.perf_counter()
    ours = RandomProbeSelector(estimator, random_state=0, **COMMON).fit(X, y)
    t_ours = time.perf_counter() - start
    r_ours = report(
        "skvlm RandomProbeSelector (coef, standardised)",
        t_ours,
        set(ours.get_support(indices=True)),
    )

    start = time.perf_counter()
    ours_perm = RandomProbeSelector(
        estimator, importance="permutation", random_state=0, **COMMON
    ).fit(X, y)
    t_perm = time.perf_counter() - start
    report(
        "skvlm RandomProbeSelector (permutation)",
        t_perm,
        set(ours_perm.get_support(indices=True)),
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecation inside feature-engine
        start = time.perf_counter()
        fe = ProbeFeatureSelection(
            estimator, collective=False, random_state=0, **COMMON
        ).fit(frame, y)
        t_fe = time.perf_counter() - start
    kept_fe = {i for i, c in enumerate(frame.columns) if c not in fe.features_to_drop_}
    r_fe = report(
        "feature-engine ProbeFeatureSelection(collective=False)", t_fe, kept_fe
    )

    print(
        f"\nspeed-up (coef): {t_fe / t_ours:.0f}x   (permutation): {t_fe / t_perm:.0f}x"
    )
    print(f"recall skvlm - feature-engine: {r_ours - r_fe:+.3f}")


if __name__ == "__main__":
    # One BLAS thread for both: on a shared 2-core machine multi-threaded BLAS
    # spins and makes small fits 10-50x slower for whichever side runs it.
    with threadpool_limits(limits=1):
        main()
