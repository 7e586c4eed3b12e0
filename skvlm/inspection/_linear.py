"""Recognise estimators whose decision is an affine map of X.

When ``decision = X @ W + b`` holds for the whole (pipeline) estimator, the
decision of a copy of X with one column (or group) permuted is the base
decision plus a rank-one (rank-|group|) update, so no predict call is needed.
Each estimator's own mapping from decision to predict / predict_proba /
decision_function is reproduced here; anything that cannot be proved equal
returns ``None`` and the caller takes the general path.
"""

import numpy as np
from scipy.special import expit
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeClassifier,
    RidgeClassifierCV,
    RidgeCV,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.svm import LinearSVC
from sklearn.utils.extmath import softmax

_LINEAR_CLASSIFIERS = (
    LogisticRegression,
    LogisticRegressionCV,
    LinearSVC,
    RidgeClassifier,
    RidgeClassifierCV,
    SGDClassifier,
)
_LINEAR_REGRESSORS = (
    LinearRegression,
    Ridge,
    RidgeCV,
    Lasso,
    ElasticNet,
    SGDRegressor,
)


class LinearDecision:
    """An estimator's decision as ``X @ W + b`` plus its output mappings.

    Parameters
    ----------
    W : ndarray of shape (n_features, n_outputs)
    b : ndarray of shape (n_outputs,)
    proba : {"softmax", "ovr", None}
        How ``predict_proba`` follows from the decision (``None``: the
        estimator has no ``predict_proba``).
    is_classifier : bool
    classes : ndarray or None
    ravel : bool
        Whether the estimator returns a 1-D decision / prediction.
    """

    def __init__(self, W, b, *, proba, is_classifier, classes, ravel):
        self.W = W
        self.b = b
        self.proba = proba
        self.is_classifier = is_classifier
        self.classes = classes
        self.ravel = ravel

    def decision_function(self, D):
        return D.ravel() if self.ravel else D

    def predict(self, D):
        if not self.is_classifier:
            return D.ravel() if self.ravel else D
        return self.classes.take(self.predict_index(D), axis=0)

    def predict_index(self, D):
        """Class index predicted from decisions of shape (..., n_outputs)."""
        if D.shape[-1] == 1:
            return (D[..., 0] > 0).astype(np.intp)
        return np.argmax(D, axis=-1)

    def predict_proba(self, D):
        if D.shape[1] == 1:
            # Binary: LogisticRegression and SGD's log loss both use expit.
            p = expit(D[:, 0])
            return np.stack([1 - p, p], axis=1)
        if self.proba == "softmax":
            return softmax(D, copy=True)
        prob = expit(D)
        prob_sum = prob.sum(axis=1)
        all_zero = prob_sum == 0
        if np.any(all_zero):
            prob[all_zero, :] = 1
            prob_sum[all_zero] = prob.shape[1]
        prob /= prob_sum.reshape((prob.shape[0], -1))
        return prob

    def predict_log_proba(self, D):
        return np.log(self.predict_proba(D))


def _final_estimator_decision(est):
    """``(W, b, proba, is_classifier, classes, ravel)`` of a final step, or None."""
    linear_decision = getattr(est, "_linear_decision", None)
    if callable(linear_decision):
        out = linear_decision()
        if out is None:
            return None
        coef, intercept = (np.asarray(a, dtype=np.float64) for a in out)
        coef = np.atleast_2d(coef)
        proba = "softmax" if hasattr(est, "predict_proba") else None
        return (
            coef.T,
            np.broadcast_to(intercept, coef.shape[:1]).copy(),
            proba,
            True,
            np.asarray(est.classes_),
            coef.shape[0] == 1,
        )

    if type(est) in _LINEAR_CLASSIFIERS:
        if not hasattr(est, "coef_") or not hasattr(est, "classes_"):
            return None
        if isinstance(est, RidgeClassifier | RidgeClassifierCV):
            if est._label_binarizer.y_type_.startswith("multilabel"):
                return None
        proba = None
        if hasattr(est, "predict_proba"):
            if isinstance(est, LogisticRegression):
                multi_class = getattr(est, "multi_class", "deprecated")
                solver = getattr(est, "solver", "lbfgs")
                if multi_class == "ovr" or (
                    multi_class == "auto" and solver == "liblinear"
                ):
                    proba = "ovr"
                elif multi_class in ("deprecated", "multinomial", "auto"):
                    proba = "softmax"
                else:
                    return None
            elif isinstance(est, SGDClassifier) and est.loss == "log_loss":
                proba = "ovr"
            else:  # e.g. SGD's modified_huber: not derived here
                return None
        coef = np.atleast_2d(np.asarray(est.coef_, dtype=np.float64))
        intercept = np.broadcast_to(
            np.asarray(est.intercept_, dtype=np.float64), coef.shape[:1]
        ).copy()
        return (
            coef.T,
            intercept,
            proba,
            True,
            np.asarray(est.classes_),
            coef.shape[0] == 1,
        )

    if type(est) in _LINEAR_REGRESSORS:
        if not hasattr(est, "coef_"):
            return None
        coef = np.asarray(est.coef_, dtype=np.float64)
        ravel = coef.ndim == 1
        coef = np.atleast_2d(coef)
        intercept = np.broadcast_to(
            np.asarray(est.intercept_, dtype=np.float64), coef.shape[:1]
        ).copy()
        return coef.T, intercept, None, False, None, ravel
    return None


def _affine_step(step):
    """A transformer step as ``(scale or matrix, shift)``: ``x -> x @ M + c``.

    ``M`` is a 1-D vector for element-wise steps (kept diagonal so a
    4096-feature scaler never becomes a 4096 x 4096 matrix). None when the
    step is not provably affine.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    if step is None or step == "passthrough":
        return "identity"
    kind = type(step)
    if kind is StandardScaler:
        n = step.n_features_in_
        mean = step.mean_ if step.mean_ is not None else np.zeros(n)
        scale = step.scale_ if step.scale_ is not None else np.ones(n)
        return 1.0 / scale, -mean / scale
    if kind is MinMaxScaler:
        if step.clip:
            return None
        return step.scale_.astype(np.float64), step.min_.astype(np.float64)
    if kind is MaxAbsScaler:
        return 1.0 / step.scale_, np.zeros_like(step.scale_, dtype=np.float64)
    if kind is PCA:
        M = step.components_.T.astype(np.float64)
        c = -(step.mean_ @ step.components_.T)
        if step.whiten:
            scale = np.sqrt(step.explained_variance_)
            M = M / scale
            c = c / scale
        return M, c
    return None


def linear_decision(estimator):
    """Compose a (pipeline) estimator into one ``LinearDecision``, or None."""
    from sklearn.pipeline import Pipeline

    if type(estimator) is Pipeline:
        steps = [s for _, s in estimator.steps]
    else:
        steps = [estimator]
    try:
        final = _final_estimator_decision(steps[-1])
    except AttributeError:
        return None
    if final is None:
        return None
    W, b, proba, is_classifier, classes, ravel = final
    # Walk back through the transformers: (x M + c) W + b = x (M W) + (c W + b).
    for step in reversed(steps[:-1]):
        affine = _affine_step(step)
        if affine is None:
            return None
        if affine == "identity":
            continue
        M, c = affine
        b = b + c @ W
        W = M[:, None] * W if M.ndim == 1 else M @ W
    return LinearDecision(
        np.ascontiguousarray(W),
        b,
        proba=proba,
        is_classifier=is_classifier,
        classes=classes,
        ravel=ravel,
    )
