"""VLMGenerativeClassifier: the paper's generative strategies as a sklearn classifier."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from .._inputs import ImageInputMixin, as_items, load_image
from .._sklearn_compat import Interval, StrOptions, fit_context
from ..models import DEFAULT_PROMPT, load_adapter
from ._class_names import class_texts
from ._generative_scoring import continuation_ids, image_prefix, score_continuations
from ._generative_text import closed_set_prompt, match_class_name

#: The paper's answer prefix (LLaVA: "... ASSISTANT: The photo features a").
DEFAULT_ANSWER_PREFIX = "The photo features a"


class VLMGenerativeClassifier(ImageInputMixin, ClassifierMixin, BaseEstimator):
    """Classify images with a generative VLM, by the strategies of Zhang et al. (2024).

    ``strategy="probabilistic"`` scores every class name as a continuation of
    the answer; ``"open_ended"`` generates an answer and looks for a class name
    in it; ``"closed_set"`` does the same with the candidate list in the prompt.
    ``fit`` trains nothing: it records ``classes_``, tokenizes the class names
    and, for ``calibration``, estimates each class's prior score.

    Parameters
    ----------
    model : str or path-like, default="llava-hf/llava-1.5-7b-hf"
        A generative VLM (LLaVA-1.5, LLaVA-NeXT, PaliGemma, BLIP-2, InstructBLIP,
        Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Idefics3, SmolVLM): hub id, local
        directory or shipped name (``"skvlm/tiny-llava"`` needs no download: a
        tiny demo model, noted once with an ``EmbeddedModelWarning``).
    class_names : mapping or sequence of str, default=None
        The text of each label: a dict ``{label: name}``, or a list aligned with
        the sorted labels. None uses ``str(label)``. Names must be distinct
        (case-insensitively) and tokenize to at least one token.
    strategy : {"probabilistic", "open_ended", "closed_set"}, default="probabilistic"
        How ``predict`` decides (see Notes).
    prompt : str, default=None
        The question. None uses "What type of object is in this photo?". It is
        formatted as ``VLMEmbeddingTransformer`` does (the family's chat
        template; a prompt holding the image placeholder is used as is). For
        ``closed_set`` it may hold a ``{candidates}`` field; otherwise
        ``' Choose one from "{candidates}".'`` is appended. A ``prompt`` column
        in a DataFrame ``X`` overrides it per row.
    answer_prefix : str, default=None
        The start of the answer after which class names are scored. None uses
        "The photo features a" (the paper's); "" scores names right after the
        prompt.
    reduction : {"sum", "mean"}, default="sum"
        A class's score is the sum of its name's token log-probabilities, or
        their mean (length normalised). (The paper calls this the score; the
        name ``score`` is taken by sklearn's ``score`` method.)
    calibration : {None, "prior", "text_prior"}, default=None
        Subtract a per-class prior from the scores (see Notes). ``"prior"``:
        the class's score averaged over the images given to ``fit`` (the
        paper's estimate). ``"text_prior"``: the class's score after the same
        prompt with the image tokens removed.
    guidance : float, default=1.0
        Weight of the prior: ``score - guidance * prior``.
    max_new_tokens : int, default=64
        Length limit of generated answers (open-ended and closed-set).
    candidate_order : {"fixed", "shuffle"}, default="fixed"
        Closed-set: the candidates in the order of ``classes_``, or in a new
        random order for each image, drawn from ``random_state``.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffled candidate order; an int gives the same orders on
        every call.
    batch_size : int, default=8
        Images per generation pass.
    class_batch_size : int, default=64
        Class continuations scored per forward pass on top of an image's cache.
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`.
    progress : bool, default=False
        Show a progress bar over images.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``.
    class_names_ : list of str
        The name of each class.
    answer_ids_ : list of int
        Token ids of the answer prefix.
    class_token_ids_ : list of list of int
        The scored token ids of each class name (see Notes).
    prior_ : ndarray of shape (n_classes,) or None
        The prior score of each class (None without calibration).

    Notes
    -----
    **Probabilistic scores.** With ``A`` the answer prefix and ``ids`` the
    tokenizer without special tokens, class ``name`` is scored on the tokens
    ``ids(A + " " + name)[len(ids(A)):]``, after the processor's ids of the
    formatted prompt (image tokens included) followed by ``ids(A)``. The image
    and prompt run once per image with the KV cache kept; all class names are
    then scored in batched passes on that cache, so the cost is one prefix
    pass per image plus about ``n_classes / class_batch_size`` short passes,
    not a full pass per class as in the paper's code.

    **Calibration.** ``decision_function`` returns ``score - guidance * prior``.
    ``guidance=1`` gives the pointwise mutual information of image and class;
    in classifier-free-guidance terms, ``prior + w * (score - prior)`` ranks
    classes as ``score - (1 - 1/w) * prior``, so ``guidance`` in [0, 1) is the
    guidance weight ``w = 1 / (1 - guidance)``. ``predict_proba`` is the softmax
    of ``decision_function`` over the classes.

    **Generation.** ``open_ended`` and ``closed_set`` decode greedily
    (``do_sample=False``) up to ``max_new_tokens`` tokens; :meth:`generate`
    returns the answers. The predicted class is the name found first in the
    answer (case-insensitive, whole words, ties to the longest name). When an
    answer names no class, the prediction falls back to the best probabilistic
    score under the same prompt, so ``predict`` always returns a class;
    ``decision_function`` and ``predict_proba`` always give the probabilistic
    scores under the strategy's prompt.

    Examples
    --------
    ``skvlm/tiny-llava`` is a tiny LLaVA shipped with skvlm, trained to answer
    "What type of object is in this photo?" about digit images.

    >>> from skvlm.classifiers import VLMGenerativeClassifier
    >>> from skvlm.datasets import load_digit_images
    >>> digits = load_digit_images(n_per_class=2)
    >>> clf = VLMGenerativeClassifier("skvlm/tiny-llava", strategy="open_ended",
    ...                               class_names=digits.target_names,
    ...                               max_new_tokens=8)
    >>> clf.fit(digits.images, digits.target).generate(digits.images[:1])
    ['The photo features a zero .']
    >>> clf.predict(digits.images[:4])
    array([0, 0, 1, 1])
    >>> proba = clf.predict_proba(digits.images[:4])  # probabilistic scores
    >>> proba.shape, proba.argmax(axis=1)
    ((4, 10), array([0, 0, 1, 1]))
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "class_names": [Mapping, list, tuple, np.ndarray, None],
        "strategy": [StrOptions({"probabilistic", "open_ended", "closed_set"})],
        "prompt": [str, None],
        "answer_prefix": [str, None],
        "reduction": [StrOptions({"sum", "mean"})],
        "calibration": [StrOptions({"prior", "text_prior"}), None],
        "guidance": [Interval(Real, None, None, closed="neither")],
        "max_new_tokens": [Interval(Integral, 1, None, closed="left")],
        "candidate_order": [StrOptions({"fixed", "shuffle"})],
        "random_state": ["random_state"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "class_batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "dtype": "no_validation",
        "progress": ["boolean"],
        "model_kwargs": [dict, None],
        "image_column": [str],
    }

    def __init__(
        self,
        model="llava-hf/llava-1.5-7b-hf",
        *,
        class_names=None,
        strategy="probabilistic",
        prompt=None,
        answer_prefix=None,
        reduction="sum",
        calibration=None,
        guidance=1.0,
        max_new_tokens=64,
        candidate_order="fixed",
        random_state=None,
        batch_size=8,
        class_batch_size=64,
        device="auto",
        dtype="auto",
        progress=False,
        model_kwargs=None,
        image_column="image",
    ):
        self.model = model
        self.class_names = class_names
        self.strategy = strategy
        self.prompt = prompt
        self.answer_prefix = answer_prefix
        self.reduction = reduction
        self.calibration = calibration
        self.guidance = guidance
        self.max_new_tokens = max_new_tokens
        self.candidate_order = candidate_order
        self.random_state = random_state
        self.batch_size = batch_size
        self.class_batch_size = class_batch_size
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.model_kwargs = model_kwargs
        self.image_column = image_column

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Record the classes, tokenize their names and estimate the prior.

        Parameters
        ----------
        X : collection of images
            Used only by ``calibration="prior"``; otherwise only its length is
            checked against ``y``.
        y : array-like of shape (n_samples,)
            Labels.

        Returns
        -------
        self : VLMGenerativeClassifier
        """
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} images but y has {len(y)} labels.")
        classes = unique_labels(y)
        names = class_texts(self.class_names, classes)
        adapter = self._adapter()
        answer = (
            DEFAULT_ANSWER_PREFIX if self.answer_prefix is None else self.answer_prefix
        )
        answer_ids, tokens = continuation_ids(
            adapter.processor.tokenizer, answer, names
        )
        empty = [
            (c, n) for c, n, t in zip(classes, names, tokens, strict=True) if not t
        ]
        if empty:
            raise ValueError(
                f"These class names tokenize to nothing after the answer prefix "
                f"{answer!r}, so they cannot be scored: {empty[:10]}. Give them a "
                "visible name in class_names."
            )
        self.classes_ = classes
        self.class_names_ = names
        self.answer_ids_ = answer_ids
        self.class_token_ids_ = tokens
        self.prior_ = None
        if self.calibration == "prior":
            self.prior_ = self._raw_scores(X, with_image=True).mean(axis=0)
        elif self.calibration == "text_prior":
            items, prompts = self._items_prompts(X)
            self.prior_ = self._scores_for(items[:1], prompts[:1], False)[0]
        return self

    def decision_function(self, X):
        """Each class's probabilistic score, calibrated if asked.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        scores : ndarray of shape (n_images, n_classes)
        """
        check_is_fitted(self)
        scores = self._raw_scores(X, with_image=True)
        if self.prior_ is not None:
            scores = scores - self.guidance * self.prior_
        return scores

    def predict_proba(self, X):
        """Softmax of :meth:`decision_function` over the classes.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        proba : ndarray of shape (n_images, n_classes)
        """
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X):
        """The predicted class of each image, by the chosen ``strategy``.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        check_is_fitted(self)
        if self.strategy == "probabilistic":
            return self.classes_[np.argmax(self.decision_function(X), axis=1)]
        items, prompts = self._items_prompts(X)
        answers = self._generate(items, prompts)
        index = np.array([match_class_name(a, self.class_names_) for a in answers])
        missing = np.flatnonzero(index < 0)
        if len(missing):
            fallback = self._scores_for(
                [items[i] for i in missing], [prompts[i] for i in missing], True
            )
            if self.prior_ is not None:
                fallback = fallback - self.guidance * self.prior_
            index[missing] = np.argmax(fallback, axis=1)
        return self.classes_[index]

    def generate(self, X):
        """The answers the model generates (open-ended or closed-set prompts).

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        answers : list of str
            One greedy answer per image, special tokens removed.
        """
        check_is_fitted(self)
        return self._generate(*self._items_prompts(X))

    def prompts(self, X):
        """The question asked about each image, before the chat template.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        prompts : list of str
        """
        check_is_fitted(self)
        return self._items_prompts(X)[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.candidate_order == "shuffle"
        return tags

    # -- internals -------------------------------------------------------------------
    def _adapter(self):
        return load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
            progress=self.progress,
        )

    def _items_prompts(self, X):
        items, row_prompts = as_items(X, self.image_column)
        base = [DEFAULT_PROMPT if self.prompt is None else self.prompt] * len(items)
        prompts = base if row_prompts is None else row_prompts
        if self.strategy != "closed_set":
            return items, prompts
        names = list(self.class_names_)
        if self.candidate_order == "fixed":
            return items, [closed_set_prompt(p, names) for p in prompts]
        rng = check_random_state(self.random_state)
        shuffled = []
        for p in prompts:
            order = rng.permutation(len(names))
            shuffled.append(closed_set_prompt(p, [names[i] for i in order]))
        return items, shuffled

    def _raw_scores(self, X, *, with_image):
        items, prompts = self._items_prompts(X)
        return self._scores_for(items, prompts, with_image)

    def _scores_for(self, items, prompts, with_image):
        import torch

        adapter = self._adapter()
        lengths = np.array([len(t) for t in self.class_token_ids_], dtype=float)
        rows = []
        with torch.inference_mode():
            for i, (item, prompt) in enumerate(
                self._progress(list(zip(items, prompts, strict=True)))
            ):
                image = load_image(item, i)
                prefix, cache = image_prefix(
                    adapter,
                    image,
                    adapter.format_prompt(prompt),
                    self.answer_ids_,
                    with_image=with_image,
                )
                sums = score_continuations(
                    adapter, prefix, cache, self.class_token_ids_, self.class_batch_size
                )
                rows.append(sums.cpu().numpy().astype(np.float64))
        scores = np.stack(rows)
        return scores / lengths if self.reduction == "mean" else scores

    def _generate(self, items, prompts):
        import torch

        adapter = self._adapter()
        tokenizer = adapter.processor.tokenizer
        answers = []
        starts = range(0, len(items), self.batch_size)
        with torch.inference_mode(), _left_padding(tokenizer):
            for start in self._progress(list(starts)):
                stop = start + self.batch_size
                images = [
                    load_image(x, start + i) for i, x in enumerate(items[start:stop])
                ]
                batch = dict(adapter.prepare(images, prompts[start:stop]))
                batch.pop("position_ids", None)  # generate derives them from the mask
                out = adapter.model.generate(
                    **batch,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
                ids = batch["input_ids"]
                if out.shape[1] >= ids.shape[1] and torch.equal(
                    out[:, : ids.shape[1]], ids
                ):
                    out = out[:, ids.shape[1] :]  # decoder-only LMs echo the prompt
                answers.extend(
                    a.strip()
                    for a in tokenizer.batch_decode(out, skip_special_tokens=True)
                )
        return answers

    def _progress(self, iterable):
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc="images")


@contextlib.contextmanager
def _left_padding(tokenizer):
    """Pad on the left while generating, so every answer starts right after its prompt."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side
