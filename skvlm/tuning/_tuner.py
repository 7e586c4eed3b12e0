"""VLMClassificationTuner: fine-tune a generative VLM on (image, label) pairs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .._inputs import ImageInputMixin, as_items
from .._sklearn_compat import Interval, StrOptions, fit_context
from ..classifiers import VLMGenerativeClassifier
from ..models import load_adapter
from . import _run
from ._batches import head_logits, load_head
from ._data import answer_prefix, data_key, instruction_rows
from ._fit import train_params, train_run
from ._parts import family_parts

#: Called after every optimizer step with the step number (tests simulate crashes).
_AFTER_STEP = None

# VLMGenerativeClassifier parameters that classifier_params may not set.
_SET_BY_THE_TUNER = {
    "model",
    "class_names",
    "strategy",
    "prompt",
    "prompt_template",
    "answer_prefix",
    "device",
    "dtype",
    "model_kwargs",
    "image_column",
}


class VLMClassificationTuner(ImageInputMixin, ClassifierMixin, BaseEstimator):
    """Fine-tune a generative VLM on classification data, as the paper's fix does.

    Zhang et al. (2024) close most of the gap between generative VLMs and CLIP
    by adding classification data, phrased as instructions, to the VLM's
    training. ``fit`` does that on ``(image, label)`` pairs: the prompt, then
    ``answer_template.format(class name)`` as the answer, the loss on the answer
    tokens only (``objective="generation"``), or a linear head on a pooled
    language-stage site trained with the model (``objective="cross_entropy"``).
    The tuned model is written to disk in ``save_pretrained`` layout
    (``model_path_``): every skvlm tool takes it as ``model=``, so the tuned
    model can be probed against the base layer by layer.

    ``predict``, ``predict_proba``, ``decision_function`` and ``score`` run the
    strategies of :class:`~skvlm.classifiers.VLMGenerativeClassifier` on the
    tuned model (through a fitted one, ``classifier_``), or the trained head.

    Parameters
    ----------
    model : str or path-like, default="llava-hf/llava-1.5-7b-hf"
        The base generative VLM (LLaVA-1.5, LLaVA-NeXT, Qwen2/2.5/3-VL,
        PaliGemma, Idefics3, SmolVLM, BLIP-2, InstructBLIP): hub id, local
        directory or shipped name. Its weights in the process-wide registry are
        never modified: training runs on a copy.
    objective : {"generation", "cross_entropy"}, default="generation"
        ``"generation"``: next-token cross-entropy on the answer tokens (and the
        end-of-sequence token), the paper's recipe. ``"cross_entropy"``: a
        linear head on the language model's last hidden state (after the final
        norm), pooled by ``pooling`` over the prompt, trained together with the
        adapted model.
    train : {"lora", "projector", "full"}, default="lora"
        What is updated. ``"lora"``: LoRA adapters (through peft) on the linear
        layers of the language model's blocks, plus the whole projector, the
        paper's LoRA recipe. ``"projector"``: the projector (connector, merger,
        or Q-Former with its query tokens and projection). ``"full"``: every
        weight of the language model (embeddings and head included) and the
        projector. The rest stays frozen.
    train_vision : bool, default=False
        Also update the vision tower.
    class_names : mapping or sequence of str, default=None
        The text of each label: ``{label: name}``, or names aligned with the
        sorted labels. None uses ``str(label)``, so string labels are their own
        names.
    prompt : str, default=None
        The question; None uses "What type of object is in this photo?". It is
        formatted by the family's chat template. A ``prompt`` column in a
        DataFrame ``X`` overrides it per row.
    answer_template : str, default="The photo features a {}."
        The answer the model learns, ``{}`` standing for the class name. The
        text before ``{}`` is the answer prefix the probabilistic strategy
        scores class names after.
    pooling : {"last", "mean"}, default="last"
        ``objective="cross_entropy"``: the head's input, the last valid token or
        the mean over every valid token (image and text) of the last layer.
    lora_rank, lora_alpha : int, default=8, 16
        LoRA rank and scaling numerator (the paper: 128 and 256 on a 7B model).
    lora_dropout : float, default=0.05
        Dropout on the LoRA input.
    lora_target_modules : list of str, default=None
        Leaf names of the language model's linear layers to adapt
        (``["q_proj", "v_proj"]``...); None adapts every linear layer of its
        blocks.
    instruction_data : DataFrame or sequence of (image, prompt, answer), default=None
        Instruction examples mixed into training so the model keeps its general
        answers (the paper mixes ImageNet with LLaVA's instruction data). A
        DataFrame needs ``image``, ``prompt`` and ``answer`` columns. Always
        trained with the generation loss.
    mix_ratio : float, default=None
        Instruction examples per classification example in each epoch, drawn
        anew each epoch (with replacement only when more are asked than
        given). None mixes in every instruction example once per epoch.
    learning_rate : float, default=2e-4
        Peak AdamW learning rate (the paper's).
    projector_learning_rate : float, default=None
        Peak learning rate of the projector; None uses ``learning_rate`` (the
        paper's LoRA run used 2e-5).
    head_learning_rate : float, default=None
        Peak learning rate of the ``cross_entropy`` head; None uses
        ``learning_rate``.
    weight_decay : float, default=0.0
        AdamW's decoupled weight decay (the paper: none).
    warmup_ratio : float, default=0.03
        Share of the optimizer steps with a linear warm-up; a cosine decay to
        zero follows (the paper's schedule).
    max_epochs : int, default=3
        Passes over the training data.
    batch_size : int, default=8
        Examples per forward pass (per micro-batch).
    gradient_accumulation_steps : int, default=1
        Micro-batches per optimizer step. The loss is normalised over the whole
        accumulated batch, so ``batch_size=4, gradient_accumulation_steps=2``
        takes the same steps as ``batch_size=8``.
    max_grad_norm : float, default=1.0
        Gradient clipping by global norm; None disables it.
    gradient_checkpointing : bool, default=False
        Recompute activations in the backward pass (less memory, more time).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training images (stratified),
        compute the objective on them every ``validation_every`` steps (each
        epoch when None), stop after ``n_iter_no_change`` validations without
        an improvement by more than ``tol``, and keep the weights of the best
        validation.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=2
    tol : float, default=0.0
    validation_every : int, default=None
    checkpoint_every : int, default=None
        Save a checkpoint (trained weights, optimizer, schedule, random state,
        position in the data) every this many optimizer steps, and when
        training ends. None saves none.
    resume : bool, default=True
        Continue from the run's checkpoint after a crash, and reuse a finished
        run of the same model, parameters, data and int ``random_state``
        instead of training it again. False starts afresh.
    output_dir : str or path-like, default=None
        Where runs go: each fit writes ``output_dir/run-<key>``, the key
        hashing the base model, the training parameters, the data and the
        seed. None uses ``<tempdir>/skvlm-tuning``.
    strategy : {"auto", "probabilistic", "open_ended", "closed_set", "head"}, default="auto"
        How ``predict`` decides: a :class:`VLMGenerativeClassifier` strategy on
        the tuned model, or ``"head"`` (``cross_entropy`` only). ``"auto"`` is
        ``"probabilistic"`` for ``generation`` and ``"head"`` for
        ``cross_entropy``.
    classifier_params : dict, default=None
        More parameters of the :class:`VLMGenerativeClassifier` that predicts
        (``reduction``, ``calibration``, ``guidance``, ``max_new_tokens``,
        ``name_match``, ``no_match``, ``candidate_order``, ``class_batch_size``,
        ``batch_size``, ``progress``...); its own defaults otherwise. The model,
        class names, prompt, answer prefix, device and dtype come from the
        tuner; ``prompt_template`` is refused, because the model learnt the
        family's chat template.
    random_state : int, RandomState instance or None, default=None
        Seeds shuffling, the validation split, LoRA's initialisation and
        dropout (torch's global generator is restored after ``fit``). An int
        makes a run reproducible and resumable.
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`. Trained weights are kept
        in float32; with a bfloat16 (or float16) model the forward pass runs
        under autocast, and the tuned model is saved in the model's dtype.
    progress : bool, default=False
        Show a progress bar with the loss.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained`` for the base model.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_names_ : list of str
    model_path_ : str
        The directory of the tuned model (``save_pretrained`` layout, loadable
        as ``model=`` by every skvlm estimator, ``probe_layers`` and the CLI).
    classifier_ : VLMGenerativeClassifier
        Fitted on the tuned model; holds no weights.
    history_ : list of dict
        One entry per optimizer step: ``step``, ``epoch``, ``loss`` (the
        objective of the step's batch), ``lr``, and ``validation_loss`` where
        a validation ran.
    n_steps_ : int
        Optimizer steps taken.
    best_step_ : int or None
        With early stopping, the step whose weights were kept.
    n_trainable_params_ : int
        Parameters updated by training (LoRA, projector, head...).

    See Also
    --------
    skvlm.classifiers.VLMGenerativeClassifier : The strategies used to predict.

    Notes
    -----
    A pickle holds no weights: it refers to the files in ``model_path_``. A
    clone trains from the untouched base, so a ``GridSearchCV`` over, e.g.,
    ``learning_rate`` or ``lora_rank`` compares runs that each start from the
    base model. Each tuned model that predicts is loaded into the process-wide
    registry; ``skvlm.clear_model_cache()`` frees them.

    Examples
    --------
    The shipped ``skvlm/tiny-llava`` answers about digits, naming few of them.
    Teach it to call the zeros "zero" and the ones "cat":

    >>> import tempfile
    >>> from skvlm.datasets import load_digit_images
    >>> from skvlm.tuning import VLMClassificationTuner
    >>> digits = load_digit_images(n_class=2, n_per_class=16)
    >>> tuner = VLMClassificationTuner(
    ...     "skvlm/tiny-llava", class_names={0: "zero", 1: "cat"},
    ...     learning_rate=3e-3, lora_rank=32, lora_alpha=64, max_epochs=8,
    ...     batch_size=4, output_dir=tempfile.mkdtemp(), random_state=0,
    ...     device="cpu")
    >>> tuner.fit(digits.images, digits.target).score(digits.images, digits.target)
    1.0
    >>> tuner.set_params(strategy="open_ended",
    ...                  classifier_params={"max_new_tokens": 8})  # doctest: +ELLIPSIS
    VLMClassificationTuner(...)
    >>> tuner.fit(digits.images, digits.target).generate(digits.images[-1:])
    ['The photo features a cat .']

    The second ``fit`` trained nothing: only a prediction parameter changed,
    so it found the finished run in ``output_dir``.
    """

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "objective": [StrOptions({"generation", "cross_entropy"})],
        "train": [StrOptions({"lora", "projector", "full"})],
        "train_vision": ["boolean"],
        "class_names": [Mapping, list, tuple, np.ndarray, None],
        "prompt": [str, None],
        "answer_template": [str],
        "pooling": [StrOptions({"last", "mean"})],
        "lora_rank": [Interval(Integral, 1, None, closed="left")],
        "lora_alpha": [Interval(Real, 0, None, closed="neither")],
        "lora_dropout": [Interval(Real, 0, 1, closed="left")],
        "lora_target_modules": [list, tuple, None],
        "instruction_data": "no_validation",
        "mix_ratio": [Interval(Real, 0, None, closed="left"), None],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "projector_learning_rate": [Interval(Real, 0, None, closed="left"), None],
        "head_learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup_ratio": [Interval(Real, 0, 1, closed="both")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "gradient_accumulation_steps": [Interval(Integral, 1, None, closed="left")],
        "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "gradient_checkpointing": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "validation_every": [Interval(Integral, 1, None, closed="left"), None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
        "resume": ["boolean"],
        "output_dir": [str, os.PathLike, None],
        "strategy": [
            StrOptions({"auto", "probabilistic", "open_ended", "closed_set", "head"})
        ],
        "classifier_params": [dict, None],
        "random_state": ["random_state"],
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
        objective="generation",
        train="lora",
        train_vision=False,
        class_names=None,
        prompt=None,
        answer_template="The photo features a {}.",
        pooling="last",
        lora_rank=8,
        lora_alpha=16,
        lora_dropout=0.05,
        lora_target_modules=None,
        instruction_data=None,
        mix_ratio=None,
        learning_rate=2e-4,
        projector_learning_rate=None,
        head_learning_rate=None,
        weight_decay=0.0,
        warmup_ratio=0.03,
        max_epochs=3,
        batch_size=8,
        gradient_accumulation_steps=1,
        max_grad_norm=1.0,
        gradient_checkpointing=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=2,
        tol=0.0,
        validation_every=None,
        checkpoint_every=None,
        resume=True,
        output_dir=None,
        strategy="auto",
        classifier_params=None,
        random_state=None,
        device="auto",
        dtype="auto",
        progress=False,
        model_kwargs=None,
        image_column="image",
    ):
        self.model = model
        self.objective = objective
        self.train = train
        self.train_vision = train_vision
        self.class_names = class_names
        self.prompt = prompt
        self.answer_template = answer_template
        self.pooling = pooling
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = lora_target_modules
        self.instruction_data = instruction_data
        self.mix_ratio = mix_ratio
        self.learning_rate = learning_rate
        self.projector_learning_rate = projector_learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.max_grad_norm = max_grad_norm
        self.gradient_checkpointing = gradient_checkpointing
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.validation_every = validation_every
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.output_dir = output_dir
        self.strategy = strategy
        self.classifier_params = classifier_params
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.model_kwargs = model_kwargs
        self.image_column = image_column

    # -- fit -------------------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fine-tune the base model on ``(X, y)`` and write the tuned model.

        Parameters
        ----------
        X : collection of images
            Paths, PIL images, arrays, bytes, or a DataFrame with an ``image``
            (and optionally a ``prompt``) column.
        y : array-like of shape (n_samples,)
            Labels; their names come from ``class_names``.

        Returns
        -------
        self : VLMClassificationTuner
        """
        items, row_prompts = as_items(X, self.image_column)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(items) != len(y):
            raise ValueError(f"X has {len(items)} images but y has {len(y)} labels.")
        if self.strategy == "head" and self.objective != "cross_entropy":
            raise ValueError(
                "strategy='head' predicts with the head of objective='cross_entropy'; "
                "use it with that objective, or pick a generative strategy."
            )
        prefix = answer_prefix(self.answer_template)
        prompts = row_prompts or [self.prompt] * len(items)
        adapter = self._base_adapter()
        parts = family_parts(adapter)
        # the classifier's own checks of the class names, before any training
        names_check = self._classifier(self.model, answer_prefix=prefix)
        names_check.set_params(calibration=None).fit(items, y)
        self.classes_ = names_check.classes_
        self.class_names_ = list(names_check.class_names_)
        y_index = np.searchsorted(self.classes_, y)
        seed, resumable = self._seed()

        run_dir = self._run_dir(adapter, items, prompts, y, seed, resumable)
        os.makedirs(run_dir, exist_ok=True)
        with _run.run_lock(run_dir):
            manifest = _run.read_manifest(run_dir)
            if manifest is None or not self.resume:
                if not self.resume:
                    _run.clear_run(run_dir)
                manifest = train_run(
                    self,
                    adapter,
                    parts,
                    items,
                    prompts,
                    y_index,
                    seed,
                    run_dir,
                    after_step=_AFTER_STEP,
                )
        self.model_path_ = run_dir
        self.history_ = manifest["history"]
        self.n_steps_ = manifest["n_steps"]
        self.best_step_ = manifest["best_step"]
        self.n_trainable_params_ = manifest["n_trainable_params"]
        self._head_cache = None
        self.classifier_ = self._classifier(run_dir, answer_prefix=prefix).fit(items, y)
        return self

    # -- predict ---------------------------------------------------------------------
    def decision_function(self, X):
        """The head's logits, or the classifier's (calibrated) class scores.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        scores : ndarray of shape (n_images, n_classes)
        """
        check_is_fitted(self)
        if self._strategy() == "head":
            return self._head_logits(X)
        return self.classifier_.decision_function(X)

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
        """The predicted class of each image, by ``strategy``.

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        labels : ndarray of shape (n_images,)
        """
        check_is_fitted(self)
        if self._strategy() == "head":
            return self.classes_[np.argmax(self._head_logits(X), axis=1)]
        return self.classifier_.predict(X)

    def generate(self, X):
        """The tuned model's greedy answers to the prompt (see ``classifier_``).

        Parameters
        ----------
        X : collection of images

        Returns
        -------
        answers : list of str
        """
        check_is_fitted(self)
        return self.classifier_.generate(X)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_head_cache", None)  # weights stay in model_path_
        return state

    # -- internals -------------------------------------------------------------------
    def _strategy(self):
        if self.strategy != "auto":
            return self.strategy
        return "head" if self.objective == "cross_entropy" else "probabilistic"

    def _base_adapter(self):
        return load_adapter(
            self.model,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self.model_kwargs,
        )

    def _tuned_kwargs(self):
        kwargs = dict(self.model_kwargs or {})
        kwargs.pop("revision", None)  # a tuned model is a local directory
        return kwargs or None

    def _classifier(self, model, *, answer_prefix):
        """A VLMGenerativeClassifier on ``model`` with the tuner's settings."""
        extra = dict(self.classifier_params or {})
        refused = sorted(set(extra) & _SET_BY_THE_TUNER)
        known = set(VLMGenerativeClassifier().get_params())
        unknown = sorted(set(extra) - known)
        if refused or unknown:
            raise ValueError(
                f"classifier_params has {refused + unknown}: "
                + (
                    f"{refused} come from the tuner's own parameters (model, "
                    "class_names, prompt, answer_template, device, dtype, "
                    "model_kwargs, image_column), and prompt_template would "
                    "differ from the chat template the model was trained on. "
                    if refused
                    else ""
                )
                + (
                    f"{unknown} are not VLMGenerativeClassifier parameters. "
                    if unknown
                    else ""
                )
                + f"Allowed: {sorted(known - _SET_BY_THE_TUNER)}."
            )
        strategy = self._strategy()
        params = {
            "random_state": self.random_state,
            "batch_size": self.batch_size,
            "verbose": int(bool(self.progress)),
            **extra,
            "class_names": self.class_names,
            "strategy": "probabilistic" if strategy == "head" else strategy,
            "prompt": self.prompt,
            "answer_prefix": answer_prefix,
            "device": self.device,
            "dtype": self.dtype,
            "model_kwargs": (
                self.model_kwargs if model == self.model else self._tuned_kwargs()
            ),
            "image_column": self.image_column,
        }
        return VLMGenerativeClassifier(model, **params)

    def _seed(self):
        """The run's int seed, and whether the run is reproducible (int random_state)."""
        if isinstance(self.random_state, Integral):
            return int(self.random_state), True
        return int(check_random_state(self.random_state).randint(2**31 - 1)), False

    def _run_dir(self, adapter, items, prompts, y, seed, resumable):
        instruction = None
        if self.instruction_data is not None:
            inst_items, inst_prompts, answers = instruction_rows(self.instruction_data)
            instruction = data_key(inst_items, inst_prompts, answers)
        key = _run.run_key(
            {
                "model": adapter.identity(),
                "dtype": str(adapter.dtype),
                "params": train_params(self),
                "data": data_key(items, [str(p) for p in prompts], y),
                "instruction": instruction,
                "seed": seed if resumable else uuid.uuid4().hex,
            }
        )
        root = (
            _run.default_root()
            if self.output_dir is None
            else os.fspath(self.output_dir)
        )
        return os.path.join(os.path.abspath(root), f"run-{key}")

    def _head_logits(self, X):
        adapter = load_adapter(
            self.model_path_,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self._tuned_kwargs(),
        )
        if getattr(self, "_head_cache", None) is None:
            self._head_cache = load_head(self.model_path_)
        items, row_prompts = as_items(X, self.image_column)
        prompts = row_prompts or [self.prompt] * len(items)
        return head_logits(
            adapter, self._head_cache, items, prompts, self.pooling, self.batch_size
        )
