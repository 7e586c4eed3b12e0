"""LinearProbeClassifier vs LogisticRegression(lbfgs) on synthetic VLM-sized features.

Synthetic features: 100 class means in 4096 dimensions plus isotropic Gaussian
noise, scaled so that the Euclidean distance between two class means is
``--separation`` noise standard deviations (the default lands accuracy around 80 %).
All classifiers train on the same 80 % of the rows and are scored on the rest,
once each, in one run: LogisticRegression(lbfgs), the probe with Adam (the
paper's optimiser) and the probe with solver="lbfgs" and alpha=1 (the penalty of
LogisticRegression's default C=1). Prints fit times, test accuracies and ratios.

    python benchmarks/bench_linear_probe.py                 # 20k x 4096, 100 classes
    python benchmarks/bench_linear_probe.py --n-samples 5000 --n-features 1024
"""

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from skvlm.classifiers import LinearProbeClassifier


def make_features(n_samples, n_features, n_classes, separation, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % n_classes)
    scale = separation / np.sqrt(2 * n_features)
    means = rng.standard_normal((n_classes, n_features), dtype=np.float32) * scale
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    X += means[y]
    return X, y


def timed_fit(estimator, X, y):
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X, y)
    elapsed = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return elapsed, converged


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=4096)
    parser.add_argument("--n-classes", type=int, default=100)
    parser.add_argument("--separation", type=float, default=8.0)
    parser.add_argument("--lr-max-iter", type=int, default=300)
    parser.add_argument("--probe-max-iter", type=int, default=200)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--skip-adam", action="store_true", help="only fit the lbfgs probe"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for both (default: all)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        # Same thread count for torch and for the BLAS that lbfgs uses.
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    X, y = make_features(
        args.n_samples, args.n_features, args.n_classes, args.separation
    )
    n_train = int(0.8 * args.n_samples)
    X_train, y_train, X_test, y_test = (
        X[:n_train],
        y[:n_train],
        X[n_train:],
        y[n_train:],
    )
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), "
        f"cuda={torch.cuda.is_available()}"
    )
    print(
        f"data: {args.n_samples} rows ({n_train} train) x {args.n_features} "
        f"features, {args.n_classes} classes, separation {args.separation}"
    )

    # torch's first optimiser step pays one-off import and set-up costs: pay
    # them on a few rows before anything is timed.
    for solver in ("adam", "lbfgs"):
        warm_up = LinearProbeClassifier(
            solver=solver, max_iter=2, early_stopping=False, device=args.device
        )
        timed_fit(warm_up, X_train[:500], y_train[:500])

    reference = LogisticRegression(solver="lbfgs", max_iter=args.lr_max_iter)
    reference_time, reference_converged = timed_fit(reference, X_train, y_train)
    reference_acc = reference.score(X_test, y_test)
    print(
        f"LogisticRegression(lbfgs): fit {reference_time:.1f} s, "
        f"{int(np.max(reference.n_iter_))} iterations"
        f"{'' if reference_converged else ' (hit max_iter)'}, "
        f"test accuracy {reference_acc:.4f}"
    )

    if not args.skip_adam:
        probe = LinearProbeClassifier(
            solver="adam",
            max_iter=args.probe_max_iter,
            weight_decay=args.weight_decay,
            random_state=0,
            device=args.device,
        )
        probe_time, probe_converged = timed_fit(probe, X_train, y_train)
        probe_acc = probe.score(X_test, y_test)
        print(
            f"LinearProbeClassifier(solver='adam', weight_decay={args.weight_decay}): "
            f"fit {probe_time:.1f} s, {probe.n_iter_} epochs "
            f"(best {probe.best_epoch_})"
            f"{'' if probe_converged else ' (hit max_iter)'}, "
            f"test accuracy {probe_acc:.4f}"
        )
        print(
            f"  accuracy difference (adam probe - lbfgs LR): "
            f"{100 * (probe_acc - reference_acc):+.2f} points; fit time ratio "
            f"probe / LR: {probe_time / reference_time:.2f}"
        )

    lbfgs = LinearProbeClassifier(
        solver="lbfgs",
        alpha=1.0,
        max_iter=args.lr_max_iter,
        random_state=0,
        device=args.device,
    )
    lbfgs_time, lbfgs_converged = timed_fit(lbfgs, X_train, y_train)
    lbfgs_acc = lbfgs.score(X_test, y_test)
    print(
        f"LinearProbeClassifier(solver='lbfgs', alpha=1.0): fit {lbfgs_time:.1f} s, "
        f"{lbfgs.n_iter_} iterations ({len(lbfgs.loss_curve_)} loss evaluations)"
        f"{'' if lbfgs_converged else ' (hit max_iter)'}, "
        f"test accuracy {lbfgs_acc:.4f}"
    )
    print(
        f"  accuracy difference (lbfgs probe - lbfgs LR): "
        f"{100 * (lbfgs_acc - reference_acc):+.2f} points; fit time ratio "
        f"probe / LR: {lbfgs_time / reference_time:.2f}"
    )


if __name__ == "__main__":
    main()
