"""One training run of the tuner: set up the copy, train, write the tuned model."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from . import _run
from ._batches import HEAD
from ._data import (
    classification_examples,
    instruction_examples,
    instruction_rows,
    split_validation,
)
from ._loop import Loop, Settings
from ._parts import make_trainable, trained_state


def train_run(est, adapter, parts, items, prompts, y_index, seed, run_dir, after_step):
    """Train ``est``'s run in ``run_dir`` (resuming its checkpoint) and save it.

    Parameters
    ----------
    est : VLMClassificationTuner
        Its parameters, ``classes_`` and ``class_names_`` are read.
    adapter : skvlm.models.Adapter
        The base model (the registry's; never modified).
    parts : Parts
    items, prompts : list
        Images and their prompts (None for the default prompt).
    y_index : ndarray of int
        Class index of each image.
    seed : int
    run_dir : str
    after_step : callable or None
        Called with the step number after every optimizer step.

    Returns
    -------
    manifest : dict
        What ``skvlm_tuning.json`` now holds.
    """
    devices = [adapter.device] if adapter.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # LoRA's initialisation and dropout
        trainable = make_trainable(
            adapter,
            parts,
            train=est.train,
            train_vision=est.train_vision,
            lora_rank=est.lora_rank,
            lora_alpha=est.lora_alpha,
            lora_dropout=est.lora_dropout,
            lora_target_modules=est.lora_target_modules,
        )
        if est.gradient_checkpointing:
            checkpointing(trainable.net, True)
        # the family's prepare() and capture() on the copy, with a processor of
        # its own: nothing the registry shares is used while training
        train_adapter = type(adapter)(trainable.net, copy.deepcopy(adapter.processor))
        head = None
        if est.objective == "cross_entropy":
            dim = adapter.model.config.get_text_config().hidden_size
            head = torch.nn.Linear(dim, len(est.classes_), device=adapter.device)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        examples, n_rows, validation = _examples(
            est, train_adapter, items, prompts, y_index, seed
        )
        loop = Loop(
            train_adapter,
            trainable,
            head,
            examples,
            n_rows,
            validation,
            _settings(est, seed, n_rows),
            run_dir,
            autocast_dtype=autocast_dtype(adapter),
        )
        if est.resume:
            loop.resume()
        state = loop.run(after_step=after_step)
    n_trainable = sum(p.numel() for p in trainable.params.values())
    if head is not None:
        n_trainable += sum(p.numel() for p in head.parameters())
    net, state_dict = trained_state(trainable, est.train)
    if est.gradient_checkpointing:
        checkpointing(net, False)
    _run.save_model(run_dir, net, adapter.processor, state_dict)
    if head is not None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().float().cpu() for k, v in head.state_dict().items()}
        save_file(tensors, os.path.join(run_dir, HEAD))
    manifest = {
        "base_model": str(est.model),
        "classes": [str(c) for c in est.classes_],
        "class_names": est.class_names_,
        "objective": est.objective,
        "train": est.train,
        "params": _run.plain(train_params(est)),
        "seed": seed,
        "history": state.history,
        "n_steps": state.step,
        "best_step": state.best_step,
        "n_trainable_params": n_trainable,
    }
    _run.write_manifest(run_dir, manifest)
    loop.clean()
    return manifest


#: Parameters that change what predict does, not what training produces.
PREDICT_PARAMS = {"strategy", "classifier_params"}
#: Parameters that change neither the trained weights nor the run they belong to.
RUN_FREE_PARAMS = {
    "output_dir",
    "progress",
    "device",
    "resume",
    "checkpoint_every",
    "image_column",
}


def train_params(est):
    """The parameters that decide the trained weights (the data aside)."""
    params = est.get_params(deep=False)
    for name in PREDICT_PARAMS | RUN_FREE_PARAMS | {"instruction_data"}:
        params.pop(name)
    params["random_state"] = None  # the seed is keyed on its own
    return params


def autocast_dtype(adapter):
    """bfloat16 / float16 models run under autocast; float32 ones without."""
    dtype = adapter.dtype
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def checkpointing(net, on):
    """Turn activation (gradient) checkpointing on or off, by transformers' v5 name."""
    name = (
        "activation_checkpointing"
        if hasattr(net, "activation_checkpointing_enable")
        else "gradient_checkpointing"
    )
    if on:
        getattr(net, f"{name}_enable")(**{f"{name}_kwargs": {"use_reentrant": False}})
    else:
        getattr(net, f"{name}_disable")()


def _examples(est, adapter, items, prompts, y_index, seed):
    rows = np.arange(len(items))
    validation = None
    common = (items, prompts, y_index, est.class_names_, est.answer_template)
    if est.early_stopping:
        rows, val_rows = split_validation(y_index, est.validation_fraction, seed)
        validation = classification_examples(adapter, *common, est.objective, val_rows)
    examples = classification_examples(adapter, *common, est.objective, rows)
    if est.instruction_data is not None:
        examples += instruction_examples(
            adapter, *instruction_rows(est.instruction_data)
        )
    return examples, len(rows), validation


def _settings(est, seed, n_rows):
    lr = est.learning_rate
    projector_lr = est.projector_learning_rate
    head_lr = est.head_learning_rate
    return Settings(
        max_epochs=est.max_epochs,
        batch_size=est.batch_size,
        accumulation=est.gradient_accumulation_steps,
        learning_rate=lr,
        projector_learning_rate=lr if projector_lr is None else projector_lr,
        head_learning_rate=lr if head_lr is None else head_lr,
        weight_decay=est.weight_decay,
        warmup_ratio=est.warmup_ratio,
        max_grad_norm=est.max_grad_norm,
        pooling=est.pooling,
        early_stopping=est.early_stopping,
        n_iter_no_change=est.n_iter_no_change,
        tol=est.tol,
        validation_every=est.validation_every,
        checkpoint_every=est.checkpoint_every,
        n_mixed=None if est.mix_ratio is None else round(est.mix_ratio * n_rows),
        seed=seed,
        progress=est.progress,
    )
