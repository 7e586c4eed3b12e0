"""VLMClassificationTuner: fine-tune a generative VLM on (image, label) pairs."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .._inputs import ImageInputMixin, as_items
from .._sklearn_compat import Interval, StrOptions, fit_context
from ..callbacks import check_callbacks, notify
from ..classifiers import VLMClassifierMixin, VLMGenerativeClassifier
from ..models import load_adapter
from . import _run
from ._batches import head_logits, load_head
from ._data import (
    answer_prefix,
    data_key,
    image_mean,
    instruction_rows,
    padded,
    template_prompt,
)
from ._dist import (
    broadcast,
    check_quantization,
    make_accelerator,
    process_device,
    quantization_config,
)
from ._fit import Job, train_run
from ._parts import family_parts
from ._settings import DEPRECATED, PAPER_PRESET, check_extra_names, is_routed, resolve


class VLMClassificationTuner(ImageInputMixin, VLMClassifierMixin, BaseEstimator):
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
    :meth:`paper_preset` gives the paper's own recipe.

    The same script trains on several processes when started with
    ``torchrun --nproc_per_node N`` or ``accelerate launch --num_processes N``
    (Hugging Face ``accelerate``, DDP):
    every batch is shared out, gradients are synchronised, and only the main
    process writes. See the user guide's "Fine-tuning at scale".

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
        The question; None uses "What type of object is in this photo?". A
        ``prompt`` column in a DataFrame ``X`` overrides it per row.
    prompt_template : str, default=None
        How the question is put to the model, in training and prediction
        alike: a text with a ``{prompt}`` field and the model's image
        placeholder (e.g. LLaVA's ``v1`` template of :meth:`paper_preset`).
        None uses the family's chat template.
    answer_template : str, default="The photo features a {}."
        The answer the model learns, ``{}`` standing for the class name. The
        text before ``{}`` is the answer prefix the probabilistic strategy
        scores class names after; ``"{}"`` is the bare label.
    pooling : {"last", "mean"}, default="last"
        ``objective="cross_entropy"``: the head's input, the last valid token or
        the mean over every valid token (image and text) of the last layer.
    image_aspect : {"native", "pad"}, default="native"
        ``"pad"``: every image is padded to a square with the processor's mean
        colour before the processor sees it, in training and prediction
        (LLaVA's ``--image_aspect_ratio pad``, :func:`skvlm._inputs.pad_to_square`);
        ``"native"``: the processor's own resizing (and cropping).
    instruction_data : DataFrame or sequence of (image, prompt, answer), default=None
        Instruction examples mixed into training so the model keeps its general
        answers (the paper mixes ImageNet with LLaVA's instruction data). A
        DataFrame needs ``image``, ``prompt`` and ``answer`` columns. Always
        trained with the generation loss.
    mix_ratio : float, default=None
        Instruction examples per classification example in each epoch, drawn
        anew each epoch (with replacement only when more are asked than
        given). None mixes in every instruction example once per epoch.
    learning_rate_init : float, default=2e-4
        Peak AdamW learning rate (the paper's LoRA runs).
    max_iter : int, default=3
        Epochs: passes over the training data.
    batch_size : int, default=8
        Examples per forward pass summed over all processes (the global
        micro-batch): each of N processes takes its share. An optimizer step
        sees ``batch_size * gradient_accumulation_steps`` examples whatever N,
        so the same parameters train the same model on 1 or 8 GPUs.
    gradient_accumulation_steps : int, default=1
        Micro-batches per optimizer step. The loss is normalised over the whole
        accumulated batch, so ``batch_size=4, gradient_accumulation_steps=2``
        takes the same steps as ``batch_size=8``.
    gradient_checkpointing : bool, default=False
        Recompute activations in the backward pass (less memory, more time).
    quantization : {"4bit", "8bit"}, default=None
        Load the frozen base weights in 4-bit (NF4, QLoRA) or 8-bit through
        bitsandbytes (a CUDA device and ``pip install bitsandbytes``);
        ``train="lora"`` only. The tuned model is saved with the adapters
        merged into de-quantized weights.
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
        Save a checkpoint (trained weights, optimizer, schedule, the random
        state of every process, position in the data) every this many
        optimizer steps, and when training ends; the main process writes it
        atomically. None saves none.
    resume : bool, default=True
        Continue from the run's checkpoint after a crash (also a ``kill -9``,
        on any number of processes), and reuse a finished run of the same
        model, parameters, data and int ``random_state`` instead of training
        it again. False starts afresh.
    output_dir : str or path-like, default=None
        Where runs go: each fit writes ``output_dir/run-<key>``, the key
        hashing the base model, the training parameters, the data and the
        seed. None uses ``<tempdir>/skvlm-tuning``. With several nodes, a
        directory every node sees.
    strategy : {"auto", "probabilistic", "open_ended", "closed_set", "head"}, default="auto"
        How ``predict`` decides: a :class:`VLMGenerativeClassifier` strategy on
        the tuned model, or ``"head"`` (``cross_entropy`` only). ``"auto"`` is
        ``"probabilistic"`` for ``generation`` and ``"head"`` for
        ``cross_entropy``.
    callbacks : list of callback objects, default=None
        Called at ``on_fit_begin``, ``on_step_end`` (``step``, ``n_steps``,
        ``loss``, ``learning_rate``, ``epoch``), ``on_epoch_end`` and
        ``on_fit_end`` (see :mod:`skvlm.callbacks`), in every process
        (``estimator.is_main_process_`` tells the main one). A callback that
        raises :class:`~skvlm.callbacks.StopTraining` ends training after the
        step; the model learnt so far is saved.
    random_state : int, RandomState instance or None, default=None
        Seeds shuffling, the validation split, LoRA's initialisation and
        dropout (torch's global generator is restored after ``fit``). An int
        makes a run reproducible and resumable.
    device, dtype : str, default="auto"
        As for :class:`skvlm.VLMEmbeddingTransformer`; under several processes
        ``"auto"`` is each process's own GPU. Trained weights are kept in
        float32; with a bfloat16 (or float16) model the forward pass runs
        under autocast, and the tuned model is saved in the model's dtype.
    verbose : int, default=1
        0: silent; 1: a progress bar with the loss (main process only); 2: also
        a log line per step.
    model_kwargs : dict, default=None
        Passed to ``from_pretrained`` for the base model.
    image_column : str, default="image"
        The column holding the images when X is a DataFrame or a
        ``datasets.Dataset``.
    **kwargs
        Routed parameters, ``<prefix>__<name>``:

        - ``lora__*``: ``peft.LoraConfig`` arguments (``train="lora"``); the
          tuner's defaults ``lora__r=8``, ``lora__lora_alpha=16``,
          ``lora__lora_dropout=0.05``, and ``lora__target_modules=None``
          (leaf names such as ``["q_proj", "v_proj"]``; None adapts every
          linear layer of the language model's blocks). The paper: r 128,
          alpha 256 on a 7B model.
        - ``optimizer__*``: ``torch.optim.AdamW`` arguments
          (``optimizer__weight_decay=0.0``, ``betas``, ``eps``...), and
          ``optimizer__max_grad_norm=1.0`` (clipping by global norm, None
          disables it), ``optimizer__projector_lr`` and
          ``optimizer__head_lr`` (peak learning rates of the projector and of
          the ``cross_entropy`` head; None: ``learning_rate_init``).
        - ``scheduler__warmup_ratio=0.03``: share of the optimizer steps with
          a linear warm-up; a cosine decay to zero follows (the paper's).
        - ``classifier__*``: parameters of the
          :class:`~skvlm.classifiers.VLMGenerativeClassifier` that predicts
          (``reduction``, ``calibration``, ``max_new_tokens``...), except those
          the tuner sets (model, class names, prompts, device, dtype).
        - ``accelerator__*``: ``accelerate.Accelerator`` arguments, e.g.
          ``accelerator__mixed_precision="bf16"`` (autocast over float32
          weights; one setting per process, as accelerate allows) or
          ``accelerator__kwargs_handlers``.

        The old names ``learning_rate``, ``max_epochs``, ``progress``,
        ``lora_rank``, ``lora_alpha``, ``lora_dropout``,
        ``lora_target_modules``, ``weight_decay``, ``warmup_ratio``,
        ``max_grad_norm``, ``projector_learning_rate``,
        ``head_learning_rate`` and ``classifier_params`` still work for this
        release, with a FutureWarning.

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
    is_main_process_ : bool
        Whether this process is the main one (always True without ``torchrun``
        or ``accelerate launch``): write files only where it is.
    n_processes_ : int
        How many processes trained.

    See Also
    --------
    skvlm.classifiers.VLMGenerativeClassifier : The strategies used to predict.

    Notes
    -----
    A pickle holds no weights: it refers to the files in ``model_path_``. A
    clone trains from the untouched base, so a ``GridSearchCV`` over, e.g.,
    ``learning_rate_init`` or ``lora__r`` compares runs that each start from
    the base model. Each tuned model that predicts is loaded into the
    process-wide registry; ``skvlm.clear_model_cache()`` frees them.

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
    ...     learning_rate_init=3e-3, lora__r=32, lora__lora_alpha=64, max_iter=8,
    ...     batch_size=4, output_dir=tempfile.mkdtemp(), random_state=0,
    ...     device="cpu", verbose=0)
    >>> tuner.fit(digits.images, digits.target).score(digits.images, digits.target)
    1.0
    >>> tuner.set_params(strategy="open_ended",
    ...                  classifier__max_new_tokens=8)  # doctest: +ELLIPSIS
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
        "prompt_template": [str, None],
        "answer_template": [str],
        "pooling": [StrOptions({"last", "mean"})],
        "image_aspect": [StrOptions({"native", "pad"})],
        "instruction_data": "no_validation",
        "mix_ratio": [Interval(Real, 0, None, closed="left"), None],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "gradient_accumulation_steps": [Interval(Integral, 1, None, closed="left")],
        "gradient_checkpointing": ["boolean"],
        "quantization": [StrOptions({"4bit", "8bit"}), None],
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
        "callbacks": [list, tuple, None],
        "random_state": ["random_state"],
        "device": "no_validation",
        "dtype": "no_validation",
        "verbose": ["verbose"],
        "model_kwargs": [dict, None],
        "image_column": [str],
        # routed parameters with a tuner default (checked when given)
        "lora__r": [Interval(Integral, 1, None, closed="left")],
        "lora__lora_alpha": [Interval(Real, 0, None, closed="neither")],
        "lora__lora_dropout": [Interval(Real, 0, 1, closed="left")],
        "lora__target_modules": [list, tuple, None],
        "optimizer__weight_decay": [Interval(Real, 0, None, closed="left")],
        "optimizer__max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
        "optimizer__projector_lr": [Interval(Real, 0, None, closed="left"), None],
        "optimizer__head_lr": [Interval(Real, 0, None, closed="neither"), None],
        "scheduler__warmup_ratio": [Interval(Real, 0, 1, closed="both")],
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
        prompt_template=None,
        answer_template="The photo features a {}.",
        pooling="last",
        image_aspect="native",
        instruction_data=None,
        mix_ratio=None,
        learning_rate_init=2e-4,
        max_iter=3,
        batch_size=8,
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        quantization=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=2,
        tol=0.0,
        validation_every=None,
        checkpoint_every=None,
        resume=True,
        output_dir=None,
        strategy="auto",
        callbacks=None,
        random_state=None,
        device="auto",
        dtype="auto",
        verbose=1,
        model_kwargs=None,
        image_column="image",
        **kwargs,
    ):
        self.model = model
        self.objective = objective
        self.train = train
        self.train_vision = train_vision
        self.class_names = class_names
        self.prompt = prompt
        self.prompt_template = prompt_template
        self.answer_template = answer_template
        self.pooling = pooling
        self.image_aspect = image_aspect
        self.instruction_data = instruction_data
        self.mix_ratio = mix_ratio
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.gradient_checkpointing = gradient_checkpointing
        self.quantization = quantization
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.validation_every = validation_every
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.output_dir = output_dir
        self.strategy = strategy
        self.callbacks = callbacks
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.model_kwargs = model_kwargs
        self.image_column = image_column
        # Stored as given, checked in fit (sklearn: __init__ validates nothing).
        for name, value in kwargs.items():
            setattr(self, name, value)

    # -- parameters: the signature's, plus routed (and deprecated) ones ------------
    def get_params(self, deep=True):
        """Parameters of this tuner, routed ones (``lora__r``...) included.

        Parameters
        ----------
        deep : bool, default=True
            Unused (the tuner holds no sub-estimator); kept for sklearn.

        Returns
        -------
        params : dict
        """
        params = super().get_params(deep=False)
        for name, value in vars(self).items():
            # routed, deprecated or (refused in fit) unknown keyword arguments;
            # not fitted attributes (trailing _) nor private state
            if not (name in params or name.endswith("_") or name.startswith("_")):
                params[name] = value
        return params

    def set_params(self, **params):
        """Set parameters, routed ones (``lora__r=16``) included.

        Parameters
        ----------
        **params : dict

        Returns
        -------
        self : VLMClassificationTuner
        """
        own = {}
        for name, value in params.items():
            if is_routed(name) or name in DEPRECATED:
                setattr(self, name, value)
            else:
                own[name] = value
        return super().set_params(**own) if own else self

    @classmethod
    def paper_preset(cls, model, class_names=None, **overrides):
        """A tuner with the paper's fine-tuning recipe (LLaVA's ``finetune.sh``).

        Zhang et al.'s headline fine-tuned row (85.7 % on ImageNet) trains the
        projector only, at an effective learning rate of 2e-5, with a cosine
        schedule after a 0.03 warm-up, no weight decay, gradient clipping at
        1.0, gradient checkpointing, images padded to a square with the
        processor's mean colour (``--image_aspect_ratio pad``), LLaVA's ``v1``
        conversation template with its system prompt, "What type of object is
        in the photo?" answered by the bare label, one epoch, batch 32 on each
        of 4 devices (a global batch of 128). Run it in bfloat16 on GPUs
        (``dtype="bfloat16"`` or ``accelerator__mixed_precision="bf16"``);
        ``train="lora"`` gives the paper's LoRA variant (add ``lora__r=128,
        lora__lora_alpha=256``).

        Parameters
        ----------
        model : str or path-like
            The base model (the paper: ``llava-hf/llava-1.5-7b-hf``).
        class_names : mapping or sequence of str, default=None
            As for the tuner.
        **overrides
            Any tuner parameter, replacing the preset's.

        Returns
        -------
        tuner : VLMClassificationTuner
            Not fitted.

        Examples
        --------
        >>> from skvlm.tuning import VLMClassificationTuner
        >>> tuner = VLMClassificationTuner.paper_preset("skvlm/tiny-llava", max_iter=2)
        >>> tuner.train, tuner.learning_rate_init, tuner.image_aspect, tuner.max_iter
        ('projector', 2e-05, 'pad', 2)
        >>> print(tuner.prompt_template.replace("{prompt}", tuner.prompt))
        A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions. \
USER: <image>
        What type of object is in the photo? ASSISTANT:
        """
        params = dict(PAPER_PRESET)
        params.update(overrides)
        return cls(model, class_names=class_names, **params)

    # -- fit -------------------------------------------------------------------------
    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fine-tune the base model on ``(X, y)`` and write the tuned model.

        Under ``torchrun`` or ``accelerate launch`` every process runs the same
        ``fit``: each takes its share of every batch, gradients are
        synchronised, and only the main process writes (``is_main_process_``).

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
        params = self.get_params()
        check_extra_names(set(params) - set(super().get_params(deep=False)))
        settings, classifier_extra = resolve(params)
        callbacks = check_callbacks(self.callbacks)
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
        check_quantization(settings)
        answer_prefix(self.answer_template)  # checked before any work
        prompts = row_prompts or [self.prompt] * len(items)
        accelerator = make_accelerator(settings, self.device)
        try:
            return self._fit(
                accelerator, settings, classifier_extra, callbacks, items, y, prompts
            )
        except BaseException:
            for name in [k for k in vars(self) if k.endswith("_") and k[0] != "_"]:
                delattr(self, name)  # a failed fit leaves no fitted attribute
            raise

    def _fit(
        self, accelerator, settings, classifier_extra, callbacks, items, y, prompts
    ):
        prefix = answer_prefix(self.answer_template)
        self.is_main_process_ = accelerator.is_main_process
        self.n_processes_ = accelerator.num_processes
        device = process_device(accelerator, self.device)
        notify(callbacks, "on_fit_begin", self, n_samples=len(items))
        adapter = self._base_adapter(device, settings.quantization)
        parts = family_parts(
            adapter, quantized=settings.quantization is not None, train=self.train
        )
        # the classifier's own checks of the class names, before any training
        names_check = self._classifier(self.model, prefix, classifier_extra, device)
        names_check.set_params(calibration=None).fit(items, y)
        self.classes_ = names_check.classes_
        self.class_names_ = list(names_check.class_names_)
        y_index = np.searchsorted(self.classes_, y)
        seed, resumable = self._seed()
        run_dir = self._run_dir(settings, adapter, items, prompts, y, seed, resumable)
        seed, run_dir = broadcast(accelerator, (seed, run_dir))

        main = accelerator.is_main_process
        if main:
            os.makedirs(run_dir, exist_ok=True)
        with _run.run_lock(run_dir) if main else contextlib.nullcontext():
            manifest = _run.read_manifest(run_dir) if main else None
            if main and manifest is not None and not settings.resume:
                _run.clear_run(run_dir)
                manifest = None
            train = broadcast(accelerator, manifest is None)
            if train:
                manifest = train_run(
                    settings,
                    Job(
                        adapter=adapter,
                        parts=parts,
                        items=items,
                        prompts=prompts,
                        y_index=y_index,
                        classes=self.classes_,
                        class_names=self.class_names_,
                        instruction_data=self.instruction_data,
                        base_model=str(self.model),
                        seed=seed,
                        run_dir=run_dir,
                    ),
                    accelerator,
                    callbacks=callbacks,
                    estimator=self,
                )
            accelerator.wait_for_everyone()
            if manifest is None:  # other processes read what the main one wrote
                manifest = _run.read_manifest(run_dir)
        self.model_path_ = run_dir
        self.history_ = manifest["history"]
        self.n_steps_ = manifest["n_steps"]
        self.best_step_ = manifest["best_step"]
        self.n_trainable_params_ = manifest["n_trainable_params"]
        self._head_cache = None
        self.classifier_ = self._classifier(
            run_dir, prefix, classifier_extra, device
        ).fit(self._predict_input(items), y)
        notify(
            callbacks,
            "on_fit_end",
            self,
            stopped_early=bool(manifest.get("stopped_early", False)),
        )
        return self

    # -- predict ---------------------------------------------------------------------
    # decision_function and predict_proba (softmax) come from VLMClassifierMixin,
    # the base of every skvlm classifier, through this method.
    def _class_scores(self, X):
        """The head's logits, or the classifier's (calibrated) class scores."""
        if self._strategy() == "head":
            return self._head_logits(X)
        return self.classifier_.decision_function(self._predict_input(X))

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
        return self.classifier_.predict(self._predict_input(X))

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
        return self.classifier_.generate(self._predict_input(X))

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_head_cache", None)  # weights stay in model_path_
        return state

    # -- internals -------------------------------------------------------------------
    def _strategy(self):
        if self.strategy != "auto":
            return self.strategy
        return "head" if self.objective == "cross_entropy" else "probabilistic"

    def _base_adapter(self, device, quantization=None):
        kwargs = self.model_kwargs
        if quantization is not None:
            kwargs = {
                **(kwargs or {}),
                "quantization_config": quantization_config(quantization),
            }
        return load_adapter(
            self.model, device=device, dtype=self.dtype, model_kwargs=kwargs
        )

    def _tuned_kwargs(self):
        kwargs = dict(self.model_kwargs or {})
        kwargs.pop("revision", None)  # a tuned model is a local directory
        return kwargs or None

    def _predict_input(self, X):
        """X as the classifier should see it: padded to squares for ``"pad"``."""
        if self.image_aspect != "pad":
            return X
        items, row_prompts = as_items(X, self.image_column)
        images = [padded(item, i, self._fill()) for i, item in enumerate(items)]
        if row_prompts is None:
            return images
        import pandas as pd

        frame = pd.DataFrame({self.image_column: images, "prompt": row_prompts})
        for column in ("candidates",):
            if hasattr(X, "columns") and column in X.columns:
                frame[column] = list(X[column])
        return frame

    def _fill(self):
        """The padding colour: the tuned model's processor's mean."""
        adapter = load_adapter(
            self.model_path_,
            device=self.device,
            dtype=self.dtype,
            model_kwargs=self._tuned_kwargs(),
        )
        return image_mean(adapter)

    def _classifier(self, model, answer_prefix, extra, device):
        """A VLMGenerativeClassifier on ``model`` with the tuner's settings."""
        strategy = self._strategy()
        params = {
            "random_state": self.random_state,
            "batch_size": self.batch_size,
            "verbose": self.verbose,
            **extra,
            "class_names": self.class_names,
            "strategy": "probabilistic" if strategy == "head" else strategy,
            "prompt": self.prompt,
            "prompt_template": self.prompt_template,
            "answer_prefix": answer_prefix,
            "device": device,
            "dtype": self.dtype,
            "model_kwargs": (
                self.model_kwargs if model == self.model else self._tuned_kwargs()
            ),
            "image_column": self.image_column,
        }
        known = VLMGenerativeClassifier().get_params()
        if "verbose" not in known:  # before the shared vocabulary reached it
            params.pop("verbose")
        return VLMGenerativeClassifier(model, **params)

    def _seed(self):
        """The run's int seed, and whether the run is reproducible (int random_state)."""
        if isinstance(self.random_state, Integral):
            return int(self.random_state), True
        return int(check_random_state(self.random_state).randint(2**31 - 1)), False

    def _run_dir(self, settings, adapter, items, prompts, y, seed, resumable):
        instruction = None
        if self.instruction_data is not None:
            inst_items, inst_prompts, answers = instruction_rows(self.instruction_data)
            instruction = data_key(inst_items, inst_prompts, answers)
        key = _run.run_key(
            {
                "model": adapter.identity(),
                "dtype": str(adapter.dtype),
                "settings": settings.run_description(),
                "data": data_key(items, [str(p) for p in prompts], y),
                "class_names": self.class_names_,
                "model_kwargs": self.model_kwargs,
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
        texts = [template_prompt(self.prompt_template, p) for p in prompts]
        if self.image_aspect == "pad":
            fill = image_mean(adapter)
            items = [padded(item, i, fill) for i, item in enumerate(items)]
        return head_logits(
            adapter, self._head_cache, items, texts, self.pooling, self.batch_size
        )
