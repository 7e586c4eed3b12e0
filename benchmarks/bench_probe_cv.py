"""LinearProbeCV against LogisticRegressionCV and GridSearchCV(LogisticRegression).

The same search, side by side in one run, on the same folds: ``Cs`` C values x
``folds`` folds of an L2 logistic regression (multinomial), then the refit at
the chosen C. The data are a Gaussian mixture (class means drawn at random,
unit noise), float32 as a VLM's features are; sklearn converts to float64
itself. Each contender prints its wall and CPU time, the chosen C, the mean
test score at each C and the best one; ratios are against LinearProbeCV.

Defaults (the issue's size): 10,000 rows x 1,024 features, 100 classes, 5 folds
x 10 Cs (``np.logspace(-4, 4, 10)``), ``max_iter=100``, ``tol=1e-4`` for all
three. ``--threads`` limits torch's and BLAS's threads alike (2, both cores, by
default; 1 gives steadier figures on a shared machine). ``--sklearn-jobs 2``
adds ``LogisticRegressionCV(n_jobs=2)``, its folds in two processes.

``--gpu`` prepares the large variant for a GPU: 50,000 x 4,096, 1,000 classes,
LinearProbeCV on ``cuda`` in float32 only (sklearn would take hours), rows in
blocks of 4,096.

Run (from benchmarks/): python bench_probe_cv.py [--rows N --features D
--classes K] [--threads T] [--skip-grid] [--sklearn-jobs N] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from _common import machine
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from threadpoolctl import threadpool_limits

from skvlm.classifiers import LinearProbeCV


def make_data(n_rows, n_features, n_classes, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n_rows) % n_classes
    rng.shuffle(y)
    centers = rng.normal(size=(n_classes, n_features)) * (3.0 / np.sqrt(n_features))
    X = centers[y] + rng.normal(size=(n_rows, n_features))
    return X.astype(np.float32), y


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_ours(X, y, folds, Cs, args, device):
    probe = LinearProbeCV(
        Cs=Cs,
        cv=folds,
        standardize=False,
        max_iter=args.max_iter,
        tol=args.tol,
        batch_size=args.batch_size,
        device=device,
    )
    with Clock() as clock:
        probe.fit(X, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return clock, probe.C_, probe.scores_.mean(axis=0), int(probe.n_iter_.sum())


def run_logistic_cv(X, y, folds, Cs, args, n_jobs=None):
    probe = LogisticRegressionCV(
        Cs=Cs,
        cv=folds,
        max_iter=args.max_iter,
        tol=args.tol,
        use_legacy_attributes=False,
        scoring="accuracy",
        n_jobs=n_jobs,
    )
    with Clock() as clock:
        probe.fit(X, y)
    return clock, probe.C_, probe.scores_[:, 0].mean(axis=0), int(probe.n_iter_.sum())


def run_grid(X, y, folds, Cs, args):
    search = GridSearchCV(
        LogisticRegression(max_iter=args.max_iter, tol=args.tol),
        {"C": list(Cs)},
        cv=folds,
    )
    with Clock() as clock:
        search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    return clock, search.best_params_["C"], scores, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-cs", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=1 << 30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument(
        "--sklearn-jobs",
        type=int,
        default=1,
        help="also LogisticRegressionCV(n_jobs=N): its folds in N processes",
    )
    parser.add_argument("--gpu", action="store_true", help="the 50k x 4096 x 1000 run")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # ConvergenceWarning at the largest Cs
    if args.gpu:
        args.rows, args.features, args.classes = 50_000, 4096, 1000
        args.batch_size = 4096
    print(f"machine: {machine()}")
    print(f"load average at start: {os.getloadavg()}")
    X, y = make_data(args.rows, args.features, args.classes)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(X, y))
    Cs = np.logspace(-4, 4, args.n_cs)
    print(
        f"{args.rows} x {args.features} float32, {args.classes} classes, "
        f"{args.folds} folds x {args.n_cs} Cs, max_iter={args.max_iter}, "
        f"tol={args.tol}, {args.threads} thread(s) for torch and BLAS"
    )
    torch.set_num_threads(args.threads)
    results = {}
    with threadpool_limits(args.threads):
        device = "cuda" if args.gpu else "cpu"
        runs = [("LinearProbeCV", lambda: run_ours(X, y, folds, Cs, args, device))]
        if not args.gpu:
            runs.append(
                ("LogisticRegressionCV", lambda: run_logistic_cv(X, y, folds, Cs, args))
            )
            if args.sklearn_jobs > 1:  # its folds in processes, one BLAS thread each
                runs.append(
                    (
                        f"LogisticRegressionCV(n_jobs={args.sklearn_jobs})",
                        lambda: run_logistic_cv(
                            X, y, folds, Cs, args, n_jobs=args.sklearn_jobs
                        ),
                    )
                )
            if not args.skip_grid:
                runs.append(
                    (
                        "GridSearchCV(LogisticRegression)",
                        lambda: run_grid(X, y, folds, Cs, args),
                    )
                )
        for name, run in runs:
            clock, C, scores, n_iter = run()
            results[name] = (clock, C, scores)
            print(
                f"{name:<34} wall {clock.wall:8.1f} s  CPU {clock.cpu:8.1f} s  "
                f"C_={float(np.ravel(C)[0]):.4g}  best mean score "
                f"{scores.max():.4f}  L-BFGS iterations {n_iter}",
                flush=True,
            )
            print("    mean test score per C: " + " ".join(f"{s:.4f}" for s in scores))
    ours = results["LinearProbeCV"][0]
    for name, (clock, _, scores) in results.items():
        if name != "LinearProbeCV":
            gap = np.abs(scores - results["LinearProbeCV"][2]).max()
            print(
                f"LinearProbeCV vs {name}: {clock.wall / ours.wall:.2f}x faster "
                f"(wall), {clock.cpu / ours.cpu:.2f}x (CPU); largest gap in mean "
                f"score over the Cs {gap:.4f}"
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
