"""One training run of the tuner: set up the copy, train, write the tuned model."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

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
from ._loop import Loop
from ._parts import make_trainable, trained_state


@dataclass
class Job:
    """The data of a run and where it goes (the settings say how it trains).

    Attributes
    ----------
    adapter : skvlm.models.Adapter
        The base model (the registry's; never modified).
    parts : Parts
    items, prompts : list
        Images and their prompts (None for the default prompt).
    y_index : ndarray of int
        Class index of each image.
    classes, class_names : sequence
    instruction_data : object or None
        The tuner's ``instruction_data`` parameter.
    base_model : str
    seed : int
    run_dir : str
    """

    adapter: object
    parts: object
    items: list
    prompts: list
    y_index: np.ndarray
    classes: object
    class_names: list
    instruction_data: object
    base_model: str
    seed: int
    run_dir: str


def train_run(settings, job, accelerator, *, callbacks=(), estimator=None):
    """Train ``job`` (resuming its checkpoint) and save it; every process calls it.

    Parameters
    ----------
    settings : TrainSettings
    job : Job
    accelerator : accelerate.Accelerator
    callbacks : list
    estimator : object
        Handed to the callbacks.

    Returns
    -------
    manifest : dict or None
        What ``skvlm_tuning.json`` now holds (None in other processes than
        the main one, which alone writes).
    """
    adapter = job.adapter
    devices = [adapter.device] if adapter.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(job.seed)  # LoRA's initialisation and dropout
        trainable = make_trainable(
            adapter,
            job.parts,
            train=settings.train,
            train_vision=settings.train_vision,
            lora=settings.lora,
        )
        if settings.gradient_checkpointing:
            checkpointing(trainable.net, True)
        # the family's prepare() and capture() on the copy, with a processor of
        # its own: nothing the registry shares is used while training
        train_adapter = type(adapter)(trainable.net, copy.deepcopy(adapter.processor))
        head = None
        if settings.objective == "cross_entropy":
            dim = adapter.model.config.get_text_config().hidden_size
            head = torch.nn.Linear(dim, len(job.classes), device=adapter.device)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        examples, n_rows, validation = _examples(settings, job, train_adapter)
        if accelerator.process_index > 0:
            # dropout differs between processes; process 0 keeps the stream of
            # a single-process run
            torch.manual_seed(job.seed + accelerator.process_index)
        loop = Loop(
            train_adapter,
            trainable,
            head,
            examples,
            n_rows,
            validation,
            settings,
            job.seed,
            job.run_dir,
            accelerator=accelerator,
            autocast_dtype=autocast_dtype(adapter),
            callbacks=callbacks,
            estimator=estimator,
        )
        if settings.resume:
            loop.resume()
        state = loop.run()
    if not accelerator.is_main_process:
        return None
    n_trainable = sum(p.numel() for p in trainable.params.values())
    if head is not None:
        n_trainable += sum(p.numel() for p in head.parameters())
    net, state_dict = trained_state(trainable, settings.train)
    if settings.gradient_checkpointing:
        checkpointing(net, False)
    _run.save_model(job.run_dir, net, adapter.processor, state_dict)
    if head is not None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().float().cpu() for k, v in head.state_dict().items()}
        save_file(tensors, os.path.join(job.run_dir, HEAD))
    manifest = {
        "base_model": job.base_model,
        "classes": [str(c) for c in job.classes],
        "class_names": job.class_names,
        "objective": settings.objective,
        "train": settings.train,
        "params": _run.plain(settings.run_description()),
        "seed": job.seed,
        "history": state.history,
        "n_steps": state.step,
        "best_step": state.best_step,
        "stopped_early": state.stopped,
        "n_processes": accelerator.num_processes,
        "n_trainable_params": n_trainable,
    }
    _run.write_manifest(job.run_dir, manifest)
    loop.clean()
    return manifest


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


def _examples(settings, job, adapter):
    rows = np.arange(len(job.items))
    validation = None
    common = (
        job.items,
        job.prompts,
        job.y_index,
        job.class_names,
        settings.answer_template,
    )
    template = settings.prompt_template
    if settings.early_stopping:
        rows, val_rows = split_validation(
            job.y_index, settings.validation_fraction, job.seed
        )
        validation = classification_examples(
            adapter, *common, settings.objective, val_rows, template
        )
    examples = classification_examples(
        adapter, *common, settings.objective, rows, template
    )
    if job.instruction_data is not None:
        examples += instruction_examples(
            adapter, *instruction_rows(job.instruction_data), template
        )
    return examples, len(rows), validation
