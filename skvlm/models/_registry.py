"""Load a model once per process and hand the same adapter to every clone.

GridSearchCV clones its estimator for every candidate and fold; the registry keys
loaded models by (model, revision, device, dtype, model_kwargs), so all those
clones share one copy of the weights. ``clear_model_cache`` frees it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from pathlib import Path

import torch

# Modules whose Adapter subclasses declare the ``model_types`` they serve. A new
# family is one more module here.
ADAPTER_MODULES = (
    "skvlm.models._vision",
    "skvlm.models._llava",
    "skvlm.models._paligemma",
    "skvlm.models._blip",
    "skvlm.models._qwen",
    "skvlm.models._idefics",
    "skvlm.models._generic",
)

# Models shipped inside the package, addressable by name.
SHIPPED_PREFIX = "skvlm/"

_CACHE: dict[tuple, object] = {}
_LOCK = threading.RLock()


class ModelNotFoundError(OSError):
    """The model id or path could not be loaded; the message says how to fix it."""


def clear_model_cache():
    """Forget every loaded model, so its memory can be freed.

    Estimators reload lazily on their next ``transform``.

    Examples
    --------
    >>> import skvlm
    >>> skvlm.clear_model_cache()
    """
    with _LOCK:
        _CACHE.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(device):
    """``"auto"`` -> cuda, then mps, then cpu; else the device, checked to exist.

    Raises
    ------
    ValueError
        When ``device`` is no torch device, or names a CUDA or MPS device this
        machine lacks; the message says what to pass instead.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', "
            "'cuda', 'cuda:<index>' or 'mps'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but torch sees no CUDA GPU; "
            "use device='auto' or device='cpu'."
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device={device!r} was asked for but MPS is not available; "
            "use device='auto' or device='cpu'."
        )
    return resolved


def resolve_dtype(dtype, device):
    """``"auto"`` -> bfloat16 on cuda, float32 elsewhere (fp32 is faster on CPU)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        value = getattr(torch, str(dtype))
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise ValueError(
            f"dtype={dtype!r} is not a torch dtype; use 'auto', 'float32', "
            "'bfloat16' or 'float16'."
        )
    return value


def shipped_models():
    """Names of the models shipped inside the package (``skvlm/<name>``)."""
    root = Path(__file__).resolve().parent.parent / "_data" / "models"
    if not root.is_dir():
        return []
    return sorted(SHIPPED_PREFIX + p.name for p in root.iterdir() if p.is_dir())


def resolve_model(model):
    """A local directory for shipped names and existing paths; the id otherwise."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model:
        raise TypeError(
            f"model must be a Hugging Face id or a local directory, got {model!r}."
        )
    if model.startswith(SHIPPED_PREFIX):
        path = Path(__file__).resolve().parent.parent / "_data" / "models"
        path = path / model[len(SHIPPED_PREFIX) :]
        if not path.is_dir():
            raise ModelNotFoundError(
                f"{model!r} is not a model shipped with skvlm; shipped models: "
                f"{shipped_models()}."
            )
        return str(path)
    if os.path.isdir(model):
        return os.path.abspath(model)
    return model


def _adapter_classes():
    classes = []
    for name in ADAPTER_MODULES:
        module = importlib.import_module(name)
        classes.extend(getattr(module, "ADAPTERS", None) or _subclasses(module))
    return classes


def _subclasses(module):
    from ._base import Adapter

    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Adapter)
        and getattr(obj, "model_types", None)
        and obj.__module__ == module.__name__
    ]


def supported_families():
    """The model families skvlm has adapters for, with their config model types."""
    return {cls.family: tuple(cls.model_types) for cls in _adapter_classes()}


def adapter_class(config):
    """The adapter class for a model config, or an error listing the supported families."""
    model_type = getattr(config, "model_type", None)
    for cls in _adapter_classes():
        if model_type in cls.model_types:
            return cls
    from ._generic import GenericImageTextAdapter

    if GenericImageTextAdapter.supports(config):
        return GenericImageTextAdapter
    families = ", ".join(
        f"{family} ({'/'.join(types)})"
        for family, types in supported_families().items()
    )
    raise ValueError(
        f"Model type {model_type!r} is not supported by skvlm. Supported families: "
        f"{families}. Vision encoders loaded by AutoModel with a single list of "
        "blocks usually work through the generic vision adapter; open an issue for "
        "other families."
    )


def _not_found(model, exc):
    return ModelNotFoundError(
        f"Could not load model {model!r}: {type(exc).__name__}: {exc}. It is not a "
        "local directory, and the Hugging Face Hub could not provide it (offline, "
        "a typo, or a gated repository). Point model= at a local copy saved with "
        "save_pretrained (config, safetensors weights and processor in one folder), "
        "or download it once with `huggingface-cli download <id>` and pass the "
        "folder."
    )


def load_config(model, revision=None, model_kwargs=None):
    """The model's config, with the error of :func:`_not_found` on failure."""
    from transformers import AutoConfig

    path = resolve_model(model)
    kwargs = {"revision": revision} if revision else {}
    trust = (model_kwargs or {}).get("trust_remote_code", False)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust, **kwargs)
    except (OSError, ValueError) as exc:
        raise _not_found(model, exc) from exc


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def load_adapter(model, *, device="auto", dtype="auto", model_kwargs=None):
    """Load ``model`` (once per process) and wrap it in its family's adapter.

    Parameters
    ----------
    model : str or Path
        Hub id, local directory or shipped name.
    device : str or torch.device, default="auto"
    dtype : str or torch.dtype, default="auto"
    model_kwargs : dict, default=None
        Passed to ``from_pretrained`` (``revision``, ``device_map``,
        ``quantization_config``, ``attn_implementation``, ``trust_remote_code``...).

    Returns
    -------
    adapter : Adapter
    """
    model_kwargs = dict(model_kwargs or {})
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    key = (
        resolve_model(model),
        resolved_device.type,
        resolved_device.index,
        str(resolved_dtype),
        _freeze(model_kwargs),
    )
    with _LOCK:
        adapter = _CACHE.get(key)
        if adapter is None:
            adapter = _load(model, resolved_device, resolved_dtype, model_kwargs)
            _CACHE[key] = adapter
    return adapter


def _load(model, device, dtype, model_kwargs):
    import transformers

    path = resolve_model(model)
    revision = model_kwargs.get("revision")
    config = load_config(model, revision, model_kwargs)
    cls = adapter_class(config)
    kwargs = {"trust_remote_code": False, "use_safetensors": None, **model_kwargs}
    kwargs["dtype"] = dtype
    auto = getattr(transformers, getattr(cls, "auto_class", "AutoModel"))
    try:
        net = auto.from_pretrained(path, **kwargs)
        processor = cls.load_processor(
            path, revision=revision, model_kwargs=model_kwargs
        )
    except (OSError, ValueError) as exc:
        raise _not_found(model, exc) from exc
    if "device_map" not in model_kwargs and not _is_quantized(net):
        net = net.to(device)
    net.eval()
    adapter = cls(net, processor)
    adapter.source = {
        "model": str(model),
        "path": path,
        "revision": revision or getattr(net.config, "_commit_hash", None),
    }
    return adapter


def _is_quantized(net):
    return getattr(net, "is_quantized", False) or getattr(net, "hf_quantizer", None)


def load_processor(path, *, revision=None, model_kwargs=None):
    """``AutoProcessor``, falling back to ``AutoImageProcessor`` for vision-only models."""
    from transformers import AutoImageProcessor, AutoProcessor

    kwargs = {"revision": revision} if revision else {}
    trust = (model_kwargs or {}).get("trust_remote_code", False)
    try:
        processor = AutoProcessor.from_pretrained(
            path, trust_remote_code=trust, **kwargs
        )
    except (OSError, ValueError, TypeError):
        processor = None
    if processor is None or not (
        hasattr(processor, "image_processor") or callable(processor)
    ):
        processor = AutoImageProcessor.from_pretrained(
            path, trust_remote_code=trust, **kwargs
        )
    return processor


def fingerprint(adapter):
    """A hash of what decides the model's outputs: config, revision and weight files.

    Weight files are sampled (size plus the first, middle and last MiB of each),
    so fingerprinting a 14 GB checkpoint reads a few MiB, yet any retrained or
    re-saved weights change it.
    """
    cached = getattr(adapter, "_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha1()
    source = dict(getattr(adapter, "source", {}))
    source.pop("model", None)  # as typed by the user; "path" is the resolved one
    digest.update(json.dumps(source, sort_keys=True, default=str).encode())
    digest.update(adapter.model.config.to_json_string(use_diff=False).encode())
    path = source.get("path")
    if path and os.path.isdir(path):
        for file in sorted(Path(path).glob("*.safetensors")) + sorted(
            Path(path).glob("*.bin")
        ):
            digest.update(_sample_file(file))
    adapter._fingerprint = digest.hexdigest()
    return adapter._fingerprint


def _sample_file(file, chunk=1 << 20):
    size = file.stat().st_size
    digest = hashlib.sha1(f"{file.name}:{size}".encode())
    with open(file, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            f.seek(offset)
            digest.update(f.read(chunk))
    return digest.digest()
