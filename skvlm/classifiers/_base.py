"""The classifier base: ``decision_function``, ``predict_proba`` and ``predict``
written once, from a per-class score method."""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .._deprecation import resolve_verbose
from .._inputs import image_key
from ..callbacks import ProgressBar, check_callbacks, notify

__all__ = ["VLMClassifierMixin", "scores_to_proba"]


def scores_to_proba(scores, link="softmax"):
    """Class probabilities from per-class scores.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        One column per class; or, for two classes, the positive class's logit
        alone (as a linear probe's ``decision_function`` gives it), which
        ``softmax`` reads as the scores ``[0, logit]``.
    link : {"softmax", "sigmoid"}, default="softmax"
        ``softmax``: over the classes (log-probabilities, CLIP's logits);
        ``sigmoid``: each score through the logistic function, then normalised
        to sum to one (SigLIP's per-pair objective).

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes)

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.classifiers import scores_to_proba
    >>> scores_to_proba(np.log([[1.0, 3.0]])).round(2)
    array([[0.25, 0.75]])
    >>> scores_to_proba(np.zeros((1, 2)), link="sigmoid")
    array([[0.5, 0.5]])
    >>> scores_to_proba(np.array([0.0]))
    array([[0.5, 0.5]])
    """
    if link == "sigmoid":
        scores = expit(scores)
        return scores / scores.sum(axis=1, keepdims=True)
    if link != "softmax":
        raise ValueError(f"link must be 'softmax' or 'sigmoid', got {link!r}.")
    if scores.ndim == 1:
        positive = expit(scores)
        return np.column_stack([1.0 - positive, positive])
    return softmax(scores, axis=1)


class VLMClassifierMixin(ClassifierMixin):
    """``decision_function`` / ``predict_proba`` / ``predict`` from class scores.

    A subclass implements ``_class_scores(X)`` (an array of shape
    ``(n_images, n_classes)``, one column per entry of ``classes_``) and sets
    ``classes_`` in ``fit``; ``_proba_link`` (``"softmax"`` or ``"sigmoid"``,
    see :func:`scores_to_proba`) says how scores become probabilities.
    :class:`~skvlm.classifiers.CLIPZeroShotClassifier`,
    :class:`~skvlm.classifiers.VLMGenerativeClassifier` and
    :class:`~skvlm.tuning.VLMClassificationTuner` build on it.

    Rows of NaN scores (images that could not be read, under
    ``on_error="nan"``) stay NaN in ``decision_function`` and
    ``predict_proba``; ``predict`` has no label for them and raises an error
    naming them.

    It also holds what the model-running classifiers share around a model
    call: the ``verbose`` level (reading the deprecated ``progress``) and the
    callbacks, with a progress bar at ``verbose >= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.base import BaseEstimator
    >>> from skvlm.classifiers import VLMClassifierMixin
    >>> class Fixed(VLMClassifierMixin, BaseEstimator):
    ...     def fit(self, X, y):
    ...         self.classes_ = np.unique(y)
    ...         return self
    ...     def _class_scores(self, X):
    ...         return np.asarray(X, dtype=float)
    >>> clf = Fixed().fit(None, ["a", "b"])
    >>> clf.predict([[0.0, 2.0], [1.0, 0.0]])
    array(['b', 'a'], dtype='<U1')
    >>> clf.predict_proba([[0.0, 0.0]])
    array([[0.5, 0.5]])
    """

    _proba_link = "softmax"

    def _class_scores(self, X):  # pragma: no cover - the subclass's job
        raise NotImplementedError

    def decision_function(self, X):
        """Each class's score for each image (higher: more likely).

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        scores : ndarray of shape (n_images, n_classes)
        """
        check_is_fitted(self)
        return self._class_scores(X)

    def predict_proba(self, X):
        """Class probabilities from :meth:`decision_function`.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
        """
        return scores_to_proba(self.decision_function(X), self._proba_link)

    def predict(self, X):
        """The class with the highest score for each image.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        check_is_fitted(self)
        return self._labels(self.decision_function(X))

    def _labels(self, scores):
        lost = np.flatnonzero(np.isnan(scores).any(axis=1))
        if len(lost):
            raise ValueError(
                f"{len(lost)} image(s) have no scores (they could not be read, "
                f"on_error='nan'), so predict has no label for them: indices "
                f"{lost[:20].tolist()}. Leave them out of X, or use "
                "decision_function / predict_proba, which give them NaN rows."
            )
        return self.classes_[np.argmax(scores, axis=1)]

    # -- around model calls ------------------------------------------------------
    def _verbose(self, warn=False):
        return resolve_verbose(self, warn=warn)

    @contextlib.contextmanager
    def _model_run(self, items, desc, stage=None):
        """``on_batch(n_done, n_total, rows)`` telling the callbacks of a batch.

        The bar of ``verbose >= 1`` closes when the block ends.
        """
        user = check_callbacks(getattr(self, "callbacks", None))
        verbose = self._verbose()
        bar = ProgressBar(desc, verbose=verbose) if verbose >= 1 else None
        callbacks = [*user, bar] if bar is not None else user

        def on_batch(n_done, n_total, rows):
            keys = [image_key(items[i], i) for i in rows] if user else None
            notify(
                callbacks,
                "on_batch_end",
                self,
                n_done=n_done,
                n_total=n_total,
                keys=keys,
                stage=stage,
            )

        try:
            yield on_batch
        finally:
            if bar is not None:
                bar.close()


class _BatchEventsOf:
    """Forwards an inner transformer's ``on_batch_end`` to ``callbacks``, as ``owner``.

    A classifier that runs its model through a ``VLMEmbeddingTransformer``
    hands it this, so its callbacks hear of each batch (with the classifier as
    the estimator) but not of the inner ``fit``.
    """

    def __init__(self, callbacks, owner):
        self.callbacks = callbacks
        self.owner = owner

    def on_batch_end(self, estimator, **info):
        notify(self.callbacks, "on_batch_end", self.owner, **info)


def batch_events_of(estimator):
    """The ``callbacks`` to give an inner transformer of ``estimator`` (or None)."""
    callbacks = check_callbacks(getattr(estimator, "callbacks", None))
    return [_BatchEventsOf(callbacks, estimator)] if callbacks else None
