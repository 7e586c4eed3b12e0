"""Processes and precision: the tuner's use of Hugging Face ``accelerate``.

One ``accelerate.Accelerator`` per fit. Started plainly it is one process and
changes nothing; under ``torchrun`` or ``accelerate launch`` it joins the
process group (NCCL on GPUs, gloo on CPUs), and the training loop shares out
each batch, synchronises gradients through the model that
``Accelerator.prepare`` wraps (DDP; sharded engines are refused) and lets
the main process alone write.
"""

from __future__ import annotations

import importlib.util


def make_accelerator(settings, device):
    """An ``accelerate.Accelerator`` for a fit on ``device``.

    Placement stays the tuner's (``device_placement=False``); DDP looks for
    parameters a batch did not use only where that happens (head rows of
    ``objective="cross_entropy"``).
    """
    import torch

    try:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs
    except ImportError:
        raise ImportError(
            "VLMClassificationTuner trains through Hugging Face accelerate, which "
            "is not installed: pip install 'skvlm[tuning]' (or pip install "
            "accelerate)."
        ) from None

    kwargs = dict(settings.accelerator)
    handlers = list(kwargs.pop("kwargs_handlers", None) or [])
    if not any(isinstance(h, DistributedDataParallelKwargs) for h in handlers):
        handlers.append(
            DistributedDataParallelKwargs(
                find_unused_parameters=settings.objective == "cross_entropy"
            )
        )
    cpu = str(device).startswith("cpu") or not torch.cuda.is_available()
    try:
        accelerator = Accelerator(
            cpu=cpu, device_placement=False, kwargs_handlers=handlers, **kwargs
        )
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        raise ValueError(
            f"accelerate allows one precision and device setting per process: "
            f"{exc} Fit tuners with different accelerator__mixed_precision (or "
            "device) in separate processes."
        ) from exc
    check_engine(accelerator)
    return accelerator


def check_engine(accelerator):
    """Refuse the engines whose sharded weights the tuner cannot yet save or resume."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(
            f"accelerate is configured for {kind.value}; VLMClassificationTuner "
            "trains with DDP (and on one process) in this release: its "
            "checkpoints and the tuned model read the trained weights whole, "
            "which sharded weights are not. Launch without --use_fsdp / "
            "--use_deepspeed (accelerate config: 'multi-GPU'), and for a model "
            "too large for one GPU train LoRA (train='lora'), with "
            "quantization='4bit' if needed."
        )


def process_device(accelerator, device):
    """This process's device: its own GPU under several processes, else ``device``."""
    if accelerator.num_processes > 1 and str(device) in ("auto", "cuda"):
        return str(accelerator.device)
    return device


def broadcast(accelerator, value):
    """The main process's ``value`` in every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def gather(accelerator, value):
    """``[value of process 0, value of process 1, ...]`` in every process."""
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def check_quantization(settings):
    """QLoRA's requirements, before any model loads."""
    if settings.quantization is None:
        return
    if settings.train != "lora":
        raise ValueError(
            f"quantization={settings.quantization!r} keeps the base weights "
            f"frozen in {settings.quantization}; train={settings.train!r} would "
            "update them. Use train='lora' (QLoRA), or quantization=None."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"quantization={settings.quantization!r} loads the base weights "
            "through bitsandbytes, which is not installed: pip install "
            "bitsandbytes (it needs a CUDA GPU), or use quantization=None."
        )


def quantization_config(quantization):
    """transformers' ``BitsAndBytesConfig`` of ``"4bit"`` (QLoRA's NF4) or ``"8bit"``."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
