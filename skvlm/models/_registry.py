"""Load a model once per process and hand the same adapter to every clone.

GridSearchCV clones its estimator for every candidate and fold; the registry keys
loaded models by (model, revision, device, dtype, model_kwargs), so all those
clones share one copy of the weights. ``clear_model_cache`` frees it.

Adapters are found, not imported here: each module of ``ADAPTER_MODULES``
lists its ``ADAPTERS`` (or defines Adapter subclasses with ``model_types``). A
family is chosen by its config's ``model_type``; when none claims it, the
fallbacks (adapters with ``fallback = True``) are asked in order whether they
``supports`` the config.
"""

from __future__ import annotations

import importlib
import threading

import torch

from ._base import Adapter
from ._guards import check_device, checked_loading, note_shipped_model
from ._loading import (
    ModelNotFoundError,
    files_state,
    load_config,
    not_found,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from ._traits import NOT_SERVED, VISION_NOT_SERVED

# Modules whose Adapter subclasses declare the ``model_types`` they serve. A new
# family is one more module here.
ADAPTER_MODULES = (
    "skvlm.models._vision",
    "skvlm.models._llava",
    "skvlm.models._paligemma",
    "skvlm.models._blip",
    "skvlm.models._qwen",
    "skvlm.models._idefics",
    "skvlm.models._mllama",
    "skvlm.models._encoders",
    "skvlm.models._phi4",
    "skvlm.models._florence2",
    "skvlm.models._t5gemma2",
    "skvlm.models._diffusion_gemma",
    "skvlm.models._kosmos2",
    "skvlm.models._blip1",
    "skvlm.models._shieldgemma2",
    "skvlm.models._git",
    "skvlm.models._fuyu",
    "skvlm.models._udop",
    "skvlm.models._formulanet",
    "skvlm.models._decoder_prefix",
    "skvlm.models._generic",
    "skvlm.models._idefics1",
    "skvlm.models._backbones",
    "skvlm.models._backbones2",
    "skvlm.models._videoprism",
    "skvlm.models._itm",
)

_CACHE: dict[tuple, Adapter] = {}
_LOCK = threading.RLock()


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


def adapter_classes():
    """Every adapter class, family adapters first, then the fallbacks."""
    classes = []
    for name in ADAPTER_MODULES:
        module = importlib.import_module(name)
        classes.extend(getattr(module, "ADAPTERS", None) or _subclasses(module))
    return sorted(classes, key=lambda cls: bool(getattr(cls, "fallback", False)))


def _subclasses(module):
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Adapter)
        and (getattr(obj, "model_types", None) or getattr(obj, "fallback", False))
        and obj.__module__ == module.__name__
    ]


def supported_families():
    """The model families skvlm has adapters for, with their config model types.

    Examples
    --------
    >>> from skvlm.models import supported_families
    >>> supported_families()["llava"]
    ('llava',)
    """
    return {
        cls.family: tuple(cls.model_types)
        for cls in adapter_classes()
        if not getattr(cls, "fallback", False) and cls.model_types
    }


def adapter_class(config):
    """The adapter class for a model config, or an error listing the supported families."""
    model_type = getattr(config, "model_type", None)
    classes = adapter_classes()
    # a checkpoint whose architecture has its own adapter (BLIP's
    # retrieval model shares the captioner's model type)
    architectures = set(getattr(config, "architectures", None) or ())
    for cls in classes:
        if architectures & set(getattr(cls, "architectures", ())):
            return cls
    for cls in classes:
        if model_type in cls.model_types:
            return cls
    for cls in classes:
        if getattr(cls, "fallback", False) and cls.supports(config):
            return cls
    if model_type in NOT_SERVED:
        raise ValueError(
            f"Model type {model_type!r} is not supported by skvlm: "
            f"{NOT_SERVED[model_type]}. skvlm.models.support_matrix() lists what "
            "skvlm serves."
        )
    refused = VISION_NOT_SERVED.get(model_type)
    if refused:
        raise ValueError(
            f"Model type {model_type!r} is not supported by skvlm (stage 'vision'): "
            f"{refused}. skvlm.models.support_matrix() lists what skvlm serves."
        )
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


def load_adapter(model, *, device="auto", dtype="auto", model_kwargs=None, verbose=0):
    """Load ``model`` (once per process) and wrap it in its family's adapter.

    Every estimator and tool of skvlm loads through here, so all get the same
    checks: a meta ``device`` is refused before anything loads, a model that
    cannot be found offline gets an error naming the models shipped with skvlm,
    and using one of those tiny demo models is noted once per process
    (``EmbeddedModelWarning``).

    Parameters
    ----------
    model : str or Path
        Hub id, local directory or shipped name.
    device : str or torch.device, default="auto"
    dtype : str or torch.dtype, default="auto"
    model_kwargs : dict, default=None
        Passed to ``from_pretrained`` (``revision``, ``device_map``,
        ``quantization_config``, ``attn_implementation``, ``trust_remote_code``...).
    verbose : int, default=0
        2 or more shows transformers' "Loading weights" bar (download bars
        always show).

    Returns
    -------
    adapter : Adapter
    """
    check_device(device)
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
        if adapter is not None and files_state(key[0]) != adapter.source["files"]:
            # The directory was rewritten since it was loaded (a fine-tune saved
            # over it): the weights in memory are no longer the model's.
            adapter = None
        if adapter is None:
            with checked_loading(model, device, verbose):
                adapter = _load(model, resolved_device, resolved_dtype, model_kwargs)
            _CACHE[key] = adapter
    note_shipped_model(model)
    return adapter


def _check_timm(config, exc):
    """Raise the error that names the family and timm, where a timm tower is
    why loading failed (Perception LM, FastVLM, Gemma 3n, DETR's hub
    checkpoints)."""
    from transformers.utils import is_timm_available

    architecture = getattr(getattr(config, "vision_config", None), "architecture", None)
    # a DETR-style detector's backbone may be a timm model
    backbone = getattr(config, "backbone_config", None)
    if (
        architecture is None
        and getattr(backbone, "model_type", None) == "timm_backbone"
    ):
        architecture = getattr(backbone, "backbone", None)
    if isinstance(architecture, str) and not is_timm_available():
        raise ImportError(
            f"{config.model_type}: its vision tower is the timm model "
            f"{architecture!r}, and timm is not installed (or does not import: it "
            "needs torchvision). Install them: pip install torchvision timm."
        ) from exc


def _load(model, device, dtype, model_kwargs):
    import transformers

    path = resolve_model(model)
    state = files_state(path)
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
        raise not_found(model, exc) from exc
    except ImportError as exc:
        _check_timm(config, exc)
        raise
    if "device_map" not in model_kwargs and not _is_quantized(net):
        net = net.to(device)
    net.eval()
    adapter = cls(net, processor)
    adapter.source = {
        "model": str(model),
        "path": path,
        "revision": revision or getattr(net.config, "_commit_hash", None),
        # What the files looked like when loaded; read before loading, so a
        # rewrite during the load is seen as a change next time.
        "files": state,
    }
    return adapter


def _is_quantized(net):
    return getattr(net, "is_quantized", False) or getattr(net, "hf_quantizer", None)


__all__ = [
    "ModelNotFoundError",
    "adapter_class",
    "adapter_classes",
    "clear_model_cache",
    "load_adapter",
    "supported_families",
]
