"""The tuner's parameters: prefixed routing, deprecated names, one resolved settings object.

The tuner keeps a short list of top-level parameters and routes the rest by
prefix, as skorch does (``optimizer__weight_decay``): ``lora__*`` to peft's
``LoraConfig``, ``optimizer__*`` to AdamW (and the per-group learning rates and
clipping), ``scheduler__*`` to the warm-up + cosine schedule, ``classifier__*``
to the :class:`~skvlm.classifiers.VLMGenerativeClassifier` that predicts, and
``accelerator__*`` to ``accelerate.Accelerator``. :func:`resolve` turns an
estimator's parameters into one :class:`TrainSettings`, the only thing the
training code reads.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict, dataclass, field

#: The prefixes of routed parameters (``<prefix>__<name>``).
ROUTES = ("lora", "optimizer", "scheduler", "classifier", "accelerator")

#: The tuner's defaults of routed parameters (those not listed take the
#: library's own default: peft's, torch's, accelerate's, the classifier's).
ROUTED_DEFAULTS = {
    "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": None},
    "optimizer": {
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "projector_lr": None,
        "head_lr": None,
    },
    "scheduler": {"warmup_ratio": 0.03},
    "classifier": {},
    "accelerator": {},
}

#: Old flat names, accepted for one release with a FutureWarning.
DEPRECATED = {
    "learning_rate": "learning_rate_init",
    "max_epochs": "max_iter",
    "progress": "verbose",
    "lora_rank": "lora__r",
    "lora_alpha": "lora__lora_alpha",
    "lora_dropout": "lora__lora_dropout",
    "lora_target_modules": "lora__target_modules",
    "weight_decay": "optimizer__weight_decay",
    "max_grad_norm": "optimizer__max_grad_norm",
    "projector_learning_rate": "optimizer__projector_lr",
    "head_learning_rate": "optimizer__head_lr",
    "warmup_ratio": "scheduler__warmup_ratio",
    "classifier_params": "classifier__<name>",
}

#: Optimizer keys the tuner reads itself (the rest go to ``torch.optim.AdamW``).
_OPTIMIZER_OWN = ("max_grad_norm", "projector_lr", "head_lr")
#: Accelerator arguments the tuner sets from its own parameters.
_ACCELERATOR_SET = {
    "cpu": "device",
    "device_placement": "device",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "step_scheduler_with_optimizer": "the tuner's own schedule",
    "split_batches": "batch_size (always the global batch)",
    "dataloader_config": "the tuner's own data order",
}

#: VLMGenerativeClassifier parameters that classifier__* may not set.
SET_BY_THE_TUNER = {
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
    "image_aspect",
}


def is_routed(name):
    """Whether ``name`` is a prefixed parameter (``lora__r``...)."""
    prefix, sep, rest = name.partition("__")
    return bool(sep) and prefix in ROUTES and bool(rest)


def check_extra_names(names):
    """Refuse keyword arguments that are neither routed nor deprecated names."""
    bad = sorted(n for n in names if not is_routed(n) and n not in DEPRECATED)
    if bad:
        raise TypeError(
            f"VLMClassificationTuner got unexpected parameters {bad}. Parameters "
            f"are its own, or routed by prefix: {', '.join(p + '__' for p in ROUTES)} "
            "(e.g. lora__r=16, optimizer__weight_decay=0.01)."
        )


def routed(params, prefix):
    """``{name: value}`` of the ``prefix__name`` entries of ``params``."""
    start = prefix + "__"
    return {k[len(start) :]: v for k, v in params.items() if k.startswith(start)}


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run reads: the tuner's parameters, resolved.

    ``lora``, ``optimizer`` and ``accelerator`` hold keyword arguments of
    ``peft.LoraConfig``, ``torch.optim.AdamW`` and ``accelerate.Accelerator``.
    """

    objective: str
    train: str
    train_vision: bool
    answer_template: str
    prompt_template: str | None
    pooling: str
    image_aspect: str
    mix_ratio: float | None
    learning_rate: float
    projector_learning_rate: float
    head_learning_rate: float
    max_grad_norm: float | None
    warmup_ratio: float
    max_iter: int
    batch_size: int
    accumulation: int
    gradient_checkpointing: bool
    quantization: str | None
    early_stopping: bool
    validation_fraction: float
    n_iter_no_change: int
    tol: float
    validation_every: int | None
    checkpoint_every: int | None
    resume: bool
    verbose: int
    lora: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    accelerator: dict = field(default_factory=dict)

    def run_description(self):
        """What decides the trained weights (the run directory's key hashes it)."""
        out = asdict(self)
        for name in ("checkpoint_every", "resume", "verbose"):
            out.pop(name)
        return out


def _apply_deprecated(params):
    """Move old names to new ones, with a FutureWarning; return the new params."""
    params = dict(params)
    for old, new in DEPRECATED.items():
        if old not in params:
            continue
        value = params.pop(old)
        warnings.warn(
            f"VLMClassificationTuner's {old!r} is deprecated and will be removed in "
            f"the next release; use {new!r} instead.",
            FutureWarning,
            stacklevel=5,
        )
        if old == "classifier_params":
            for key, val in (value or {}).items():
                params.setdefault(f"classifier__{key}", val)
        elif old == "progress":
            params["verbose"] = int(bool(value))
        else:
            params[new] = value
    return params


def _check_keys(group, given, allowed, refused=None):
    refused = refused or {}
    bad = sorted(set(given) & set(refused))
    if bad:
        raise ValueError(
            f"{group}__{bad[0]} is set by the tuner from {refused[bad[0]]}; "
            f"remove {', '.join(group + '__' + b for b in bad)}."
        )
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"{', '.join(group + '__' + u for u in unknown)}: not "
            f"{'an argument' if len(unknown) == 1 else 'arguments'} the {group} "
            f"takes. Allowed: {sorted(set(allowed) - set(refused))}."
        )


def _lora_fields():
    from peft import LoraConfig

    return set(inspect.signature(LoraConfig).parameters)


def _adamw_args():
    import torch

    names = set(inspect.signature(torch.optim.AdamW).parameters)
    return names - {"params", "lr"}


def _accelerator_args():
    from accelerate import Accelerator

    return set(inspect.signature(Accelerator).parameters)


def resolve(params):
    """The :class:`TrainSettings` and the ``classifier__*`` parameters of the
    tuner's ``get_params()``.

    Old names warn and are moved to their new ones; routed names are checked
    against what their target takes.
    """
    params = _apply_deprecated(params)
    lora = {**ROUTED_DEFAULTS["lora"], **routed(params, "lora")}
    if params["train"] == "lora":
        _check_keys("lora", lora, _lora_fields(), {"task_type": "the model"})
    opt = {**ROUTED_DEFAULTS["optimizer"], **routed(params, "optimizer")}
    _check_keys("optimizer", opt, _adamw_args() | set(_OPTIMIZER_OWN))
    sched = {**ROUTED_DEFAULTS["scheduler"], **routed(params, "scheduler")}
    _check_keys("scheduler", sched, {"warmup_ratio"})
    acc = routed(params, "accelerator")
    if acc:
        _check_keys("accelerator", acc, _accelerator_args(), _ACCELERATOR_SET)
    classifier = routed(params, "classifier")
    check_classifier_params(classifier)
    lr = params["learning_rate_init"]
    projector_lr, head_lr = opt.pop("projector_lr"), opt.pop("head_lr")
    max_grad_norm = opt.pop("max_grad_norm")
    settings = TrainSettings(
        objective=params["objective"],
        train=params["train"],
        train_vision=params["train_vision"],
        answer_template=params["answer_template"],
        prompt_template=params["prompt_template"],
        pooling=params["pooling"],
        image_aspect=params["image_aspect"],
        mix_ratio=params["mix_ratio"],
        learning_rate=lr,
        projector_learning_rate=lr if projector_lr is None else projector_lr,
        head_learning_rate=lr if head_lr is None else head_lr,
        max_grad_norm=max_grad_norm,
        warmup_ratio=sched["warmup_ratio"],
        max_iter=params["max_iter"],
        batch_size=params["batch_size"],
        accumulation=params["gradient_accumulation_steps"],
        gradient_checkpointing=params["gradient_checkpointing"],
        quantization=params["quantization"],
        early_stopping=params["early_stopping"],
        validation_fraction=params["validation_fraction"],
        n_iter_no_change=params["n_iter_no_change"],
        tol=params["tol"],
        validation_every=params["validation_every"],
        checkpoint_every=params["checkpoint_every"],
        resume=params["resume"],
        verbose=params["verbose"],
        lora=lora,
        optimizer=opt,
        accelerator=acc,
    )
    return settings, classifier


def check_classifier_params(extra):
    from ..classifiers import VLMGenerativeClassifier

    known = set(VLMGenerativeClassifier().get_params())
    refused = sorted(set(extra) & SET_BY_THE_TUNER)
    unknown = sorted(set(extra) - known - SET_BY_THE_TUNER)
    if refused or unknown:
        raise ValueError(
            f"classifier__ parameters {refused + unknown}: "
            + (
                f"{refused} come from the tuner's own parameters (model, "
                "class_names, prompt, prompt_template, answer_template, device, "
                "dtype, model_kwargs, image_column, image_aspect), so that "
                "predictions see the prompts and images training saw. "
                if refused
                else ""
            )
            + (
                f"{unknown} are not VLMGenerativeClassifier parameters. "
                if unknown
                else ""
            )
            + f"Allowed: {sorted(known - SET_BY_THE_TUNER)}."
        )


#: LLaVA's ``v1`` conversation template (``conv_vicuna_v1`` in LLaVA's
#: ``llava/conversation.py``, which ``--version v1`` selects): the system prompt,
#: a space, ``USER: <image>\n{question}``, a space, ``ASSISTANT:``; the answer
#: follows after a space and ends with ``</s>`` (the end-of-sequence token).
LLAVA_V1_TEMPLATE = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's "
    "questions. USER: <image>\n{prompt} ASSISTANT:"
)

#: The paper's question in its fine-tuning data.
PAPER_QUESTION = "What type of object is in the photo?"

#: The paper's fine-tuning recipe (``training_analysis/llava/finetune.sh``).
PAPER_PRESET = {
    "objective": "generation",
    "train": "projector",
    "learning_rate_init": 2e-5,
    "scheduler__warmup_ratio": 0.03,
    "optimizer__weight_decay": 0.0,
    "optimizer__max_grad_norm": 1.0,
    "max_iter": 1,
    "batch_size": 128,
    "gradient_checkpointing": True,
    "image_aspect": "pad",
    "prompt": PAPER_QUESTION,
    "prompt_template": LLAVA_V1_TEMPLATE,
    "answer_template": "{}",
}
