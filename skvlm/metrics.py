"""Scorers for classifiers over many classes (top-k accuracy) and for image-text
retrieval (recall@k)."""

from numbers import Integral

import numpy as np
from scipy.special import expit
from sklearn.metrics import top_k_accuracy_score

from ._sklearn_compat import Interval, validate_params

__all__ = [
    "image_to_text_recall",
    "recall_at_k_scorer",
    "text_to_image_recall",
    "top_k_accuracy_scorer",
]


class _TopKAccuracyScorer:
    """Callable ``scorer(estimator, X, y)`` returning top-k accuracy."""

    def __init__(self, k):
        self.k = k

    def __repr__(self):
        return f"top_k_accuracy_scorer(k={self.k})"

    def __call__(self, estimator, X, y_true, sample_weight=None):
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ValueError(
                f"{type(estimator).__name__} has no classes_; the top-k scorer needs "
                "a fitted classifier."
            )
        classes = np.asarray(classes)
        scores = self._scores(estimator, X, len(classes))
        # top_k_accuracy_score wants labels sorted; follow the columns along.
        order = np.argsort(classes, kind="stable")
        classes, scores = classes[order], scores[:, order]

        y_true = np.asarray(y_true)
        weight = (
            np.ones(y_true.shape[0])
            if sample_weight is None
            else np.asarray(sample_weight)
        )
        # A label the estimator never saw (absent from its training fold) can't be
        # in anyone's top k: count those rows as misses instead of failing.
        known = np.isin(y_true, classes)
        if not known.any():
            return 0.0
        y_score = scores[known]
        if len(classes) == 2:
            y_score = y_score[:, 1]
        hits = top_k_accuracy_score(
            y_true[known],
            y_score,
            k=self.k,
            labels=classes,
            normalize=False,
            sample_weight=weight[known],
        )
        return float(hits / weight.sum())

    @staticmethod
    def _scores(estimator, X, n_classes):
        """Class scores (n_samples, n_classes) in the order of ``classes_``."""
        if hasattr(estimator, "predict_proba"):
            scores = np.asarray(estimator.predict_proba(X))
        elif hasattr(estimator, "decision_function"):
            scores = np.asarray(estimator.decision_function(X))
            if scores.ndim == 1:
                # One logit for classes_[1]; the sigmoid keeps the order and puts
                # the binary threshold at 0.5, where top_k_accuracy_score has it.
                positive = expit(scores)
                scores = np.column_stack([1.0 - positive, positive])
        else:
            raise ValueError(
                f"{type(estimator).__name__} has neither predict_proba nor "
                "decision_function; the top-k scorer needs class scores."
            )
        if scores.ndim != 2 or scores.shape[1] != n_classes:
            raise ValueError(
                f"{type(estimator).__name__} gave scores of shape {scores.shape}; "
                f"expected (n_samples, {n_classes}) to match its classes_."
            )
        return scores


@validate_params(
    {"k": [Interval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def top_k_accuracy_scorer(k=5):
    """Make a scorer for the share of rows whose true class is in the top ``k``.

    The scorer works as ``scoring=`` in ``cross_val_score``, ``GridSearchCV`` and
    friends, for any classifier with ``predict_proba`` or ``decision_function``.
    It passes ``labels=estimator.classes_`` to
    ``sklearn.metrics.top_k_accuracy_score``, so labels of any type work and a
    test fold that lacks some classes is scored correctly; a test row whose class
    the estimator never saw in training counts as a miss.

    Parameters
    ----------
    k : int, default=5
        Number of highest-scored classes in which the true class must appear.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None)`` returning a float in
        [0, 1]; greater is better.

    See Also
    --------
    sklearn.metrics.top_k_accuracy_score : The metric on precomputed scores.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from skvlm.metrics import top_k_accuracy_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> top2 = top_k_accuracy_scorer(k=2)
    >>> top2
    top_k_accuracy_scorer(k=2)
    >>> model = LogisticRegression(max_iter=1000)
    >>> scores = cross_val_score(model, X, y, cv=3, scoring=top2)
    >>> bool(scores.min() > 0.95)
    True
    """
    if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k={k!r} is not valid; pass an int >= 1 (e.g. k=5).")
    return _TopKAccuracyScorer(int(k))


def _retrieval_scores(image_embeddings, text_embeddings, text_image):
    images = np.asarray(image_embeddings, dtype=np.float64)
    texts = np.asarray(text_embeddings, dtype=np.float64)
    text_image = np.asarray(text_image)
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"image_embeddings {images.shape} and text_embeddings {texts.shape} must "
            "be 2-D with the same width (one joint space, e.g. a CLIP model's)."
        )
    if text_image.shape != (len(texts),) or not np.issubdtype(
        text_image.dtype, np.integer
    ):
        raise ValueError(
            f"text_image must hold one int per text ({len(texts)}): the row of "
            f"image_embeddings that each text describes; got shape {text_image.shape}."
        )
    bad = np.flatnonzero((text_image < 0) | (text_image >= len(images)))
    if bad.size:
        raise ValueError(
            f"text_image[{bad[0]}] = {text_image[bad[0]]} names no image; there are "
            f"{len(images)} images (rows 0 to {len(images) - 1})."
        )

    def unit(M):
        norms = np.linalg.norm(M, axis=1, keepdims=True)
        return M / np.where(norms == 0, 1, norms)

    return unit(images) @ unit(texts).T, text_image


def _check_k(k):
    if not isinstance(k, Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k={k!r} is not valid; pass an int >= 1 (e.g. k=5).")
    return int(k)


def text_to_image_recall(image_embeddings, text_embeddings, text_image, *, k=1):
    """Recall@k of text-to-image retrieval: texts whose image ranks in the top k.

    Each text queries every image by cosine similarity; it is a hit when the
    image it describes is among the ``k`` most similar (a tie with the true
    image counts in its favour). As CLIP_benchmark's and mteb's retrieval
    scores, on precomputed embeddings.

    Parameters
    ----------
    image_embeddings : array-like of shape (n_images, dim)
    text_embeddings : array-like of shape (n_texts, dim)
        In the same joint space (e.g. :class:`skvlm.VLMEmbeddingTransformer`
        at ``stage="projector", pooling="pooler"`` and
        :class:`skvlm.VLMTextEmbeddingTransformer` of one CLIP model).
    text_image : array-like of int, shape (n_texts,)
        The image each text describes (several texts may share one image).
    k : int, default=1

    Returns
    -------
    float
        The share of texts that are hits.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.metrics import text_to_image_recall
    >>> images = np.eye(3)
    >>> texts = np.array([[1.0, 0.1, 0], [0, 0, 1], [1, 0.5, 0]])
    >>> text_to_image_recall(images, texts, [0, 2, 1], k=1)
    0.6666666666666666
    """
    k = _check_k(k)
    scores, text_image = _retrieval_scores(
        image_embeddings, text_embeddings, text_image
    )
    columns = np.arange(len(text_image))
    true = scores[text_image, columns]
    better = (scores > true[None, :]).sum(axis=0)
    return float(np.mean(better < k))


def image_to_text_recall(image_embeddings, text_embeddings, text_image, *, k=1):
    """Recall@k of image-to-text retrieval: images with a text of theirs in the top k.

    Each image queries every text by cosine similarity; it is a hit when any
    text describing it is among the ``k`` most similar (ties count in its
    favour). Every image needs at least one text.

    Parameters
    ----------
    image_embeddings, text_embeddings, text_image, k
        As for :func:`text_to_image_recall`.

    Returns
    -------
    float
        The share of images that are hits.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.metrics import image_to_text_recall
    >>> images = np.eye(3)
    >>> texts = np.array([[1.0, 0.1, 0], [0, 0, 1], [1, 0.5, 0]])
    >>> image_to_text_recall(images, texts, [0, 2, 1], k=1)
    1.0
    """
    k = _check_k(k)
    scores, text_image = _retrieval_scores(
        image_embeddings, text_embeddings, text_image
    )
    lonely = np.setdiff1d(np.arange(len(scores)), text_image)
    if lonely.size:
        raise ValueError(
            f"Images {lonely[:10].tolist()} have no text in text_image; every image "
            "needs at least one (drop those images)."
        )
    hits = []
    for image, row in enumerate(scores):
        best = row[text_image == image].max()
        hits.append((row > best).sum() < k)
    return float(np.mean(hits))


class _RecallScorer:
    def __init__(self, text_transformer, k, direction):
        self.text_transformer = text_transformer
        self.k = k
        self.direction = direction

    def __repr__(self):
        return f"recall_at_k_scorer({self.text_transformer!r}, k={self.k}, direction={self.direction!r})"

    def __call__(self, estimator, X, y, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("recall@k takes no sample_weight.")
        from sklearn.base import clone

        images = estimator.transform(X)
        text = self.text_transformer
        if not hasattr(text, "n_features_out_"):
            text = clone(text).fit(None)
        texts = text.transform(list(y))
        metric = (
            text_to_image_recall
            if self.direction == "text_to_image"
            else image_to_text_recall
        )
        return metric(images, texts, np.arange(len(texts)), k=self.k)


def recall_at_k_scorer(text_transformer, *, k=1, direction="text_to_image"):
    """Make a scorer ``scorer(image_transformer, images, captions)`` of recall@k.

    The fitted image transformer embeds ``images``, ``text_transformer`` the
    captions ``y`` (one per image, row ``i`` describing image ``i``), and the
    score is :func:`text_to_image_recall` or :func:`image_to_text_recall`
    over them. Use it as ``scoring=`` wherever sklearn takes a scorer, e.g. in
    ``GridSearchCV`` over the image transformer's parameters.

    Parameters
    ----------
    text_transformer : VLMTextEmbeddingTransformer
        Fitted or not (it is cloned and fitted when not).
    k : int, default=1
    direction : {"text_to_image", "image_to_text"}, default="text_to_image"

    Returns
    -------
    scorer : callable

    Examples
    --------
    >>> from skvlm.metrics import recall_at_k_scorer
    >>> recall_at_k_scorer("a transformer", k=5)
    recall_at_k_scorer('a transformer', k=5, direction='text_to_image')
    """
    k = _check_k(k)
    if direction not in ("text_to_image", "image_to_text"):
        raise ValueError(
            f"direction={direction!r} is not one of 'text_to_image', 'image_to_text'."
        )
    return _RecallScorer(text_transformer, k, direction)
