"""VLMGenerativeClassifier: the paper's generative strategies as a sklearn classifier."""

from __future__ import annotations

import os
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, top_k_accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted

from .._deprecation import DEPRECATED
from .._inputs import ImageInputMixin, as_items, image_loader
from .._sklearn_compat import Hidden, Interval, StrOptions, fit_context
from ..callbacks import check_callbacks, notify
from ..models import DEFAULT_PROMPT, load_adapter
from ._base import VLMClassifierMixin
from ._class_names import class_texts
from ._generative_scoring import continuation_ids, generate_answers, score_images
from ._generative_text import (
    NAME_MATCHES,
    candidate_names,
    check_no_match,
    closed_set_prompt,
    match_class_name,
    resolve_template,
    sample_candidates,
)

#: The paper's answer prefix (LLaVA: "... ASSISTANT: The photo features a").
DEFAULT_ANSWER_PREFIX = "The photo features a"


class VLMGenerativeClassifier(ImageInputMixin, VLMClassifierMixin, BaseEstimator):
    """Classify images with a generative VLM, by the strategies of Zhang et al. (2024).

    ``strategy="probabilistic"`` scores every class name as a continuation of
    the answer; ``"open_ended"`` generates an answer and looks for a class name
    in it; ``"closed_set"`` does the same with the candidate list in the prompt.
    ``fit`` trains nothing: it records ``classes_``, tokenizes the class names
    and, for ``calibration``, estimates each class's prior score. The paper's
    own settings, and where the defaults differ from them, are listed in the
    user guide's "Fidelity to the paper's code" page.

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
        The question. None uses "What type of object is in this photo?". For
        ``closed_set`` it may hold a ``{candidates}`` field; otherwise
        ``' Choose one from "{candidates}".'`` is appended. A ``prompt`` column
        in a DataFrame ``X`` overrides it per row.
    prompt_template : str or "paper", default=None
        How the question becomes the model's text. None: as
        ``VLMEmbeddingTransformer`` does (the family's chat template; a prompt
        holding the image placeholder is used as is). A string with a
        ``{prompt}`` field: the question is put there, e.g. the paper's LLaVA
        form ``"USER: <image>\\n{prompt}\\nASSISTANT:"`` (HF's LLaVA-1.5 chat
        template puts a space, not a line break, before ``ASSISTANT:``).
        ``"paper"``: the paper's template of the model's family (LLaVA-1.5;
        BLIP-2 and InstructBLIP: ``"Question: {prompt} Answer:"``, BLIP-2's
        format in skvlm already).
    answer_prefix : str, default=None
        The start of the answer after which class names are scored. None uses
        "The photo features a" (the paper's for LLaVA; for BLIP-2 the paper
        uses "A"); "" scores names right after the prompt.
    reduction : {"sum", "mean"}, default="sum"
        A class's score is the sum of its name's token log-probabilities, or
        their mean (length normalised). (The paper calls this the score; the
        name ``score`` is taken by sklearn's ``score`` method.)
    calibration : {None, "prior", "text_prior"}, default=None
        Mix the scores with a per-class prior (see Notes). ``"prior"``: each
        name token's log-probability averaged over the images given to
        ``fit`` (the paper averages over the evaluated images: fit on them, or
        see :meth:`calibration_sweep`). ``"text_prior"``: the scores after the
        same prompt with the image tokens removed.
    guidance : float, default=2.0
        The paper's weight ``a`` of the calibration:
        ``a * score + (1 - a) * prior``. 1 leaves the scores unchanged; the
        paper sweeps 0, 1, ..., 8 and reports the best.
    max_new_tokens : int, default=64
        Length limit of generated answers (open-ended and closed-set; the
        paper's 64).
    name_match : {"substring", "word"}, default="substring"
        Open-ended and closed-set: how a class name is found in an answer.
        ``"substring"``: anywhere, lower-cased (the paper's test, so "cat" is
        found in "category"); ``"word"``: at word boundaries only.
    no_match : "probabilistic" or label, default=-1
        Open-ended and closed-set: the prediction for an answer that names no
        class. A label value (not one of the classes) makes it wrong, as in the
        paper; ``"probabilistic"`` falls back to the best probabilistic score
        under the same prompt, so that every answer gets a class.
    candidate_order : {"shuffle", "fixed"}, default="shuffle"
        Closed-set: the candidates in a new random order for each image, drawn
        from ``random_state`` (the paper's default), or in the order given
        (``classes_``, or the ``candidates`` column of ``X``).
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffled candidate order; an int gives the same orders on
        every call.
    batch_size : int, default=8
        Images per generation pass.
    class_batch_size : int, default=64
        Class continuations scored per forward pass on top of an image's cache.
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`.
    verbose : int, default=1
        0 silent; 1 a progress bar over the images that run through the model;
        2 also a line per batch. See :term:`verbose`.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained``.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.
    callbacks : list of callbacks, default=None
        Told ``on_fit_begin`` / ``on_fit_end`` around ``fit`` and
        ``on_batch_end`` after each image scored or batch generated (see
        :mod:`skvlm.callbacks`; ``stage`` is None: the model's output, not a
        stage's features, is read).
    progress : bool
        Deprecated alias of ``verbose``; warns, removed in 0.3.
    image_aspect : {"native", "pad"}, default="native"
        ``"native"``: each image goes to the processor as it is (resized and
        centre-cropped by it). ``"pad"``: padded to a square with the
        processor's ``image_mean`` first (LLaVA's ``--image_aspect_ratio pad``,
        :func:`skvlm._inputs.pad_to_square`), as the paper's fine-tuned LLaVA
        saw its images; nothing is cropped away.

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
        The prior score of each class (None without calibration), reduced over
        the name's tokens like the scores.

    Notes
    -----
    **Probabilistic scores.** With ``A`` the answer prefix and ``ids`` the
    tokenizer without special tokens, class ``name`` is scored on the tokens
    ``ids(A + " " + name)[len(ids(A)):]``, after the processor's ids of the
    formatted prompt (image tokens included) followed by ``ids(A)``. The image
    and prompt run once per image with the KV cache kept; all class names are
    then scored in batched passes on that cache, so the cost is one prefix
    pass per image plus about ``n_classes / class_batch_size`` short passes,
    not a full pass per class as in the paper's code. Models whose cache
    holds recurrent state rather than per-layer keys and values (hybrid or
    linear-attention language models such as Qwen3.5, ``Traits(cache=
    "recompute")``) cannot share one prefix across classes: for them the
    scorer runs prompt, answer prefix and class name again for each class,
    one full pass per (image, class), as the paper's code does.

    **Calibration** follows ``inference_analysis/get_accuracy.ipynb``: each
    name token's log-probability ``lp`` is mixed with that token's prior
    ``p`` (its log-probability averaged over the images) as
    ``a * lp + (1 - a) * p`` and the mixed values are summed over the name's
    tokens (averaged with ``reduction="mean"``), with ``a = guidance``. Both
    steps are linear, so ``decision_function`` computes it as
    ``guidance * score + (1 - guidance) * prior_`` with ``prior_`` the
    image-averaged score. This is classifier-free guidance,
    ``prior + a * (score - prior)``; for ``a > 0`` it ranks the classes as
    ``score - (1 - 1/a) * prior``, so a large ``a`` approaches the pointwise
    mutual information ``score - prior``. ``predict_proba`` is the softmax of
    ``decision_function`` over the classes.

    **Generation.** ``open_ended`` and ``closed_set`` decode greedily
    (``do_sample=False``) up to ``max_new_tokens`` tokens; :meth:`generate`
    returns the answers. The predicted class is the name found first in the
    answer (``name_match``; ties to the longest name); an answer naming no
    class gets ``no_match``. The paper's accuracy counts an answer right when
    it contains the true name, so an answer naming two classes is right for
    both: :func:`skvlm.classifiers.answer_is_correct` computes exactly that
    from :meth:`generate`'s answers. ``decision_function`` and
    ``predict_proba`` always give the probabilistic scores under the
    strategy's prompt.

    **Closed-set candidates.** By default every class is a candidate. A pandas
    DataFrame ``X`` with a ``candidates`` column (a list of labels per row)
    asks each image its own list, e.g. the paper's protocol of the true class
    and ``n - 1`` random others: ``X["candidates"] =
    clf.sample_candidates(y, n)``.

    Examples
    --------
    ``skvlm/tiny-llava`` is a tiny LLaVA shipped with skvlm, trained to answer
    "What type of object is in this photo?" about digit images, with some digits
    named in its training answers far more often than others (see the user
    guide's "The paper in miniature"): it names a two or a six, and calls the
    rest "a digit", "a sign", "a number" or "a symbol".

    >>> from skvlm.classifiers import VLMGenerativeClassifier, answer_is_correct
    >>> from skvlm.datasets import load_digit_images
    >>> digits = load_digit_images(n_per_class=2)
    >>> names = digits.target_names
    >>> clf = VLMGenerativeClassifier("skvlm/tiny-llava", strategy="open_ended",
    ...                               class_names=names, max_new_tokens=8)
    >>> clf.fit(digits.images, digits.target).generate(digits.images[2:6])
    ['The photo features a sign .', 'The photo features a sign .',
     'The photo features a two .', 'The photo features a two .']
    >>> clf.predict(digits.images[2:6])  # no digit named: no_match=-1, wrong
    array([-1, -1,  2,  2])
    >>> answers = clf.generate(digits.images)
    >>> answer_is_correct(answers, [names[k] for k in digits.target]).mean()
    np.float64(0.2)
    >>> proba = clf.predict_proba(digits.images[2:6])  # probabilistic scores
    >>> proba.shape, proba.argmax(axis=1)
    ((4, 10), array([1, 1, 2, 2]))
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "class_names": [Mapping, list, tuple, np.ndarray, None],
        "strategy": [StrOptions({"probabilistic", "open_ended", "closed_set"})],
        "prompt": [str, None],
        "prompt_template": [str, None],
        "answer_prefix": [str, None],
        "reduction": [StrOptions({"sum", "mean"})],
        "calibration": [StrOptions({"prior", "text_prior"}), None],
        "guidance": [Interval(Real, None, None, closed="neither")],
        "max_new_tokens": [Interval(Integral, 1, None, closed="left")],
        "name_match": [StrOptions(set(NAME_MATCHES))],
        "no_match": "no_validation",
        "candidate_order": [StrOptions({"fixed", "shuffle"})],
        "random_state": ["random_state"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "class_batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "dtype": "no_validation",
        "verbose": ["verbose"],
        "model_kwargs": [dict, None],
        "image_column": [str],
        "callbacks": [list, tuple, None],
        "progress": [Hidden(StrOptions({DEPRECATED})), "boolean"],
        "image_aspect": [StrOptions({"native", "pad"})],
    }

    def __init__(
        self,
        model="llava-hf/llava-1.5-7b-hf",
        *,
        class_names=None,
        strategy="probabilistic",
        prompt=None,
        prompt_template=None,
        answer_prefix=None,
        reduction="sum",
        calibration=None,
        guidance=2.0,
        max_new_tokens=64,
        name_match="substring",
        no_match=-1,
        candidate_order="shuffle",
        random_state=None,
        batch_size=8,
        class_batch_size=64,
        device="auto",
        dtype="auto",
        verbose=1,
        model_kwargs=None,
        image_column="image",
        callbacks=None,
        progress=DEPRECATED,
        image_aspect="native",
    ):
        self.model = model
        self.class_names = class_names
        self.strategy = strategy
        self.prompt = prompt
        self.prompt_template = prompt_template
        self.answer_prefix = answer_prefix
        self.reduction = reduction
        self.calibration = calibration
        self.guidance = guidance
        self.max_new_tokens = max_new_tokens
        self.name_match = name_match
        self.no_match = no_match
        self.candidate_order = candidate_order
        self.random_state = random_state
        self.batch_size = batch_size
        self.class_batch_size = class_batch_size
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.model_kwargs = model_kwargs
        self.image_column = image_column
        self.callbacks = callbacks
        self.progress = progress
        self.image_aspect = image_aspect

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
        self._verbose(warn=True)
        callbacks = check_callbacks(self.callbacks)
        notify(callbacks, "on_fit_begin", self, n_samples=len(X))
        classes = unique_labels(y)
        names = class_texts(self.class_names, classes)
        check_no_match(self.no_match, classes)
        adapter = self._adapter()
        traits = getattr(adapter, "traits", None)
        unsupported = getattr(traits, "unsupported", {}).get("generative")
        if unsupported:
            raise ValueError(
                f"VLMGenerativeClassifier cannot score answers of {adapter.family} "
                f"models: {unsupported}. Train a probe on the features of a stage "
                f"it offers ({', '.join(adapter.stages)}) instead."
            )
        # It reads the model's logits, not a stage's hidden states: a language
        # stage refused for its hidden states (loop blocks) still answers.
        has_language = "language" in getattr(adapter, "unavailable", {})
        if "language" not in adapter.stages and not has_language:
            raise ValueError(
                f"model={self.model!r} is a {adapter.family} model: it has no "
                "language model, so it can neither generate nor score an answer. "
                "For a CLIP or SigLIP model use CLIPZeroShotClassifier (zero-shot) "
                "or VLMEmbeddingTransformer with a probe; VLMGenerativeClassifier "
                "needs a generative VLM, e.g. model='llava-hf/llava-1.5-7b-hf'."
            )
        resolve_template(
            self.prompt_template,
            adapter.family,
            getattr(adapter, "image_token", "<image>"),
        )
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
        notify(callbacks, "on_fit_end", self, stopped_early=False)
        return self

    # decision_function (each class's probabilistic score, calibrated if
    # asked) and predict_proba (its softmax over the classes) come from
    # VLMClassifierMixin.
    def _class_scores(self, X):
        return self._calibrated(self._raw_scores(X, with_image=True), self.prior_)

    def predict(self, X):
        """The predicted class of each image, by the chosen ``strategy``.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        labels : ndarray of shape (n_images,)
            Open-ended and closed-set: ``no_match`` where the answer names no
            class (unless ``no_match="probabilistic"``).
        """
        check_is_fitted(self)
        if self.strategy == "probabilistic":
            return super().predict(X)
        items, prompts = self._items_prompts(X)
        answers = self._generate(items, prompts)
        index = np.array(
            [
                match_class_name(a, self.class_names_, rule=self.name_match)
                for a in answers
            ],
            dtype=int,
        )
        missing = np.flatnonzero(index < 0)
        if not len(missing):
            return self.classes_[index]
        if self.no_match == "probabilistic":
            fallback = self._scores_for(
                [items[i] for i in missing], [prompts[i] for i in missing], True
            )
            index[missing] = np.argmax(self._calibrated(fallback, self.prior_), axis=1)
            return self.classes_[index]
        return np.asarray(
            [self.classes_[i] if i >= 0 else self.no_match for i in index]
        )

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
        """The question asked about each image, before the prompt template.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        prompts : list of str
        """
        check_is_fitted(self)
        return self._items_prompts(X)[1]

    def sample_candidates(self, y, n_candidates):
        """Closed-set candidate lists as the paper draws them (true class + others).

        For each label, ``n_candidates - 1`` other classes drawn at random and the
        true class, in random order (``main_results/main.py``), from
        ``random_state``. Put them in a ``candidates`` column of ``X``.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            The true labels of the images to ask.
        n_candidates : int
            Candidates per image (the paper: 2, 5, 20 or 100, or every class).

        Returns
        -------
        candidates : list of list
            One list of labels per sample.
        """
        check_is_fitted(self)
        return sample_candidates(y, self.classes_, n_candidates, self.random_state)

    def calibration_sweep(self, X, y, guidance=range(9), *, prior="evaluated", k=5):
        """Accuracy of the probabilistic scores over a grid of ``guidance`` values.

        The paper's calibration protocol (``inference_analysis/get_accuracy.ipynb``):
        the scores of ``X`` are computed once, the prior is their mean over
        ``X`` itself, and every ``a`` in ``range(9)`` is tried; the paper reports
        the best, so ``a`` is chosen on the test images. For an unbiased figure,
        choose ``guidance`` on other images (or ``prior="fitted"`` with a
        ``calibration="prior"`` model fitted on training images).

        Parameters
        ----------
        X : collection of images
        y : array-like of shape (n_samples,)
            True labels, each one of ``classes_``.
        guidance : iterable of float, default=range(9)
        prior : {"evaluated", "fitted"}, default="evaluated"
            ``"evaluated"``: the mean score over ``X`` (the paper's);
            ``"fitted"``: ``prior_`` from ``fit``.
        k : int, default=5
            Top-k accuracy is reported too (the paper reports top-5).

        Returns
        -------
        table : DataFrame
            One row per value: ``guidance``, ``accuracy``, ``top_k_accuracy``.
            ``guidance=1`` is the uncalibrated score.
        """
        check_is_fitted(self)
        if prior not in ("evaluated", "fitted"):
            raise ValueError(f"prior must be 'evaluated' or 'fitted'; got {prior!r}.")
        if prior == "fitted" and self.prior_ is None:
            raise ValueError(
                "prior='fitted' needs a prior from fit: set calibration='prior' or "
                "'text_prior' before fitting, or use prior='evaluated'."
            )
        scores = self._raw_scores(X, with_image=True)
        base = scores.mean(axis=0) if prior == "evaluated" else self.prior_
        rows = []
        for a in guidance:
            mixed = float(a) * scores + (1 - float(a)) * base
            rows.append(
                {
                    "guidance": float(a),
                    "accuracy": accuracy_score(
                        y, self.classes_[np.argmax(mixed, axis=1)]
                    ),
                    "top_k_accuracy": (
                        top_k_accuracy_score(y, mixed, k=k, labels=self.classes_)
                        if 1 < k < len(self.classes_)
                        else np.nan
                    ),
                }
            )
        return pd.DataFrame(rows)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = (
            self.strategy == "closed_set" and self.candidate_order == "shuffle"
        )
        return tags

    # -- internals -------------------------------------------------------------------
    def _adapter(self):
        return load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
            verbose=self._verbose(),
        )

    def _calibrated(self, scores, prior):
        if prior is None:
            return scores
        return self.guidance * scores + (1 - self.guidance) * prior

    def _model_texts(self, adapter, prompts):
        """The questions in the prompt template (the adapter formats the rest)."""
        template = resolve_template(
            self.prompt_template,
            adapter.family,
            getattr(adapter, "image_token", "<image>"),
        )
        if template is None:
            return list(prompts)
        return [template.replace("{prompt}", p) for p in prompts]

    def _items_prompts(self, X):
        items, row_prompts = as_items(X, self.image_column)
        base = [DEFAULT_PROMPT if self.prompt is None else self.prompt] * len(items)
        prompts = base if row_prompts is None else row_prompts
        if self.strategy != "closed_set":
            return items, prompts
        lists = candidate_names(X, self.classes_, self.class_names_, len(items))
        rng = check_random_state(self.random_state)
        out = []
        for prompt, names in zip(prompts, lists, strict=True):
            if self.candidate_order == "shuffle":
                names = [names[i] for i in rng.permutation(len(names))]
            out.append(closed_set_prompt(prompt, names))
        return items, out

    def _raw_scores(self, X, *, with_image):
        items, prompts = self._items_prompts(X)
        return self._scores_for(items, prompts, with_image)

    def _scores_for(self, items, prompts, with_image):
        adapter = self._adapter()
        with self._model_run(items, "scoring") as on_batch:
            sums = score_images(
                adapter,
                items,
                [adapter.format_prompt(t) for t in self._model_texts(adapter, prompts)],
                self.answer_ids_,
                self.class_token_ids_,
                batch_size=self.class_batch_size,
                with_image=with_image,
                on_batch=on_batch,
                load=image_loader(self.image_aspect, adapter.processor),
            )
        if self.reduction == "sum":
            return sums
        return sums / np.array([len(t) for t in self.class_token_ids_], dtype=float)

    def _generate(self, items, prompts):
        adapter = self._adapter()
        with self._model_run(items, "generating") as on_batch:
            return generate_answers(
                adapter,
                items,
                self._model_texts(adapter, prompts),
                batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens,
                on_batch=on_batch,
                load=image_loader(self.image_aspect, adapter.processor),
            )
