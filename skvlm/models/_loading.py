"""Loading what a model needs, and naming what decides its outputs.

A leaf of ``skvlm.models``: the device and dtype a model runs on, where a model
name points (a shipped model, a local directory or a hub id), its config and
processor (without torchvision where a family's processor would need it), and
:func:`model_identity`, the hash a feature store keys on. Adapters and the
registry import from here; nothing here imports an adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch

from .._filestate import FileDigests, stat_state
from .._transformers_compat import (
    MissingVideoProcessor,  # noqa: F401 (re-exported by skvlm.models)
    load_processor_without_torchvision,
    processor_class_without_video,
    torchvision_available,
)
from .._transformers_compat import (
    load_processor_without_video as _compat_load_processor_without_video,
)

# Models shipped inside the package, addressable by name.
SHIPPED_PREFIX = "skvlm/"
_SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "_data" / "models"


class ModelNotFoundError(OSError):
    """The model id or path could not be loaded; the message says how to fix it."""


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
    if not _SHIPPED_ROOT.is_dir():
        return []
    return sorted(
        SHIPPED_PREFIX + p.name for p in _SHIPPED_ROOT.iterdir() if p.is_dir()
    )


def resolve_model(model):
    """A local directory for shipped names and existing paths; the id otherwise."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model:
        raise TypeError(
            f"model must be a Hugging Face id or a local directory, got {model!r}."
        )
    if model.startswith(SHIPPED_PREFIX):
        path = _SHIPPED_ROOT / model[len(SHIPPED_PREFIX) :]
        if not path.is_dir():
            raise ModelNotFoundError(
                f"{model!r} is not a model shipped with skvlm; shipped models: "
                f"{shipped_models()}."
            )
        return str(path)
    if os.path.isdir(model):
        return os.path.abspath(model)
    return model


def not_found(model, exc):
    """The ModelNotFoundError for ``model`` that says how to get a local copy."""
    return ModelNotFoundError(
        f"Could not load model {model!r}: {type(exc).__name__}: {exc}. It is not a "
        "local directory, and the Hugging Face Hub could not provide it (offline, "
        "a typo, or a gated repository). Point model= at a local copy saved with "
        "save_pretrained (config, safetensors weights and processor in one folder), "
        "or download it once with `hf download <id>` and pass the folder; a model "
        "already in the Hugging Face cache loads offline, without waiting for the "
        "Hub, with HF_HUB_OFFLINE=1 set."
    )


def check_hub(model, revision=None, timeout=3.0):
    """Fail at once, with the offline fix, when hub id ``model`` cannot be reached.

    The Hub client retries an unreachable Hub for about half a minute before
    transformers gives up; one request without retries tells the same sooner.
    Models already in the Hugging Face cache, offline mode (``HF_HUB_OFFLINE=1``)
    and names that are no hub id are left to transformers.
    """
    import huggingface_hub
    from huggingface_hub import constants

    try:
        huggingface_hub.utils.validate_repo_id(model)
        cached = huggingface_hub.try_to_load_from_cache(
            model, "config.json", revision=revision
        )
    except ValueError:
        return
    if constants.HF_HUB_OFFLINE or isinstance(cached, str):
        return
    url = f"{constants.ENDPOINT}/api/models/{model}"
    try:
        huggingface_hub.get_session().head(url, timeout=timeout)
    except Exception as exc:  # the HTTP client's own error types vary by version
        raise ModelNotFoundError(
            f"Could not load model {model!r}: the Hugging Face Hub at "
            f"{constants.ENDPOINT} cannot be reached ({type(exc).__name__}: {exc}), "
            "and the model is not in the Hugging Face cache. Without a network: "
            "copy the model here (`hf download <id>` where there is one, then pass "
            "its folder as model=), or, if it is in the cache already, set "
            "HF_HUB_OFFLINE=1 to load it without asking the Hub."
        ) from exc


def load_config(model, revision=None, model_kwargs=None):
    """The model's config, with the error of :func:`not_found` on failure."""
    from transformers import AutoConfig

    path = resolve_model(model)
    kwargs = {"revision": revision} if revision else {}
    trust = (model_kwargs or {}).get("trust_remote_code", False)
    if not os.path.isdir(path):
        check_hub(path, revision)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust, **kwargs)
    except (OSError, ValueError) as exc:
        raise not_found(model, exc) from exc


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
    except ImportError:
        # its class needs torchvision (PixtralProcessor): the stand-in, if any
        processor = load_processor_without_torchvision(path, **kwargs)
    if processor is None or not (
        hasattr(processor, "image_processor") or callable(processor)
    ):
        processor = AutoImageProcessor.from_pretrained(
            path, trust_remote_code=trust, **kwargs
        )
    return processor


# -- processors without torchvision ---------------------------------------------------
# The stand-in and the class that accepts it depend on the transformers release:
# they live in the compat module, re-exported here for the adapters.
without_video_processor = processor_class_without_video


def load_processor_without_video(path, class_name, *, revision=None, model_kwargs=None):
    """Load a processor that owns a video processor, without torchvision if need be.

    With a working torchvision this is ``AutoProcessor.from_pretrained``;
    otherwise the processor class ``class_name`` is loaded with a stand-in for
    its video processor (which raises if ever asked to process a video).

    Parameters
    ----------
    path : str
        Hub id or local directory in ``save_pretrained`` layout.
    class_name : str
        The transformers processor class (``"Qwen2VLProcessor"``...).
    revision : str, default=None
    model_kwargs : dict, default=None
        Only ``trust_remote_code`` is read, for the torchvision path.

    Returns
    -------
    processor : transformers.ProcessorMixin

    Examples
    --------
    >>> import tempfile
    >>> from skvlm.models import load_processor_without_video
    >>> from skvlm.testing import make_tiny_qwen2_vl
    >>> path = make_tiny_qwen2_vl(tempfile.mkdtemp())
    >>> processor = load_processor_without_video(path, "Qwen2VLProcessor")
    >>> type(processor).__name__, processor.image_token
    ('Qwen2VLProcessor', '<|image_pad|>')
    """
    import transformers

    kwargs = {"revision": revision} if revision else {}
    if torchvision_available():
        trust = (model_kwargs or {}).get("trust_remote_code", False)
        try:
            return transformers.AutoProcessor.from_pretrained(
                path, trust_remote_code=trust, **kwargs
            )
        except (ImportError, OSError):  # torchvision unusable, or no video config
            pass
    return _compat_load_processor_without_video(
        path, getattr(transformers, class_name), **kwargs
    )


# -- what decides a model's outputs -------------------------------------------------
_DIGEST_LOCK = threading.Lock()  # the on-disk memo


def model_files(path):
    """Every file of a model directory that can change its outputs, sorted.

    That is every regular file below ``path`` (weights in any format and shards,
    config, tokenizer, processor and chat template), except hidden ones
    (download caches, lock files).
    """
    root = Path(path)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                files.append(Path(dirpath) / name)
    return sorted(files)


def files_state(path):
    """What ``stat`` says of every model file: a cheap check that none changed.

    Returns
    -------
    tuple
        ``(relative path, size, mtime_ns, ctime_ns, inode, device)`` per file of
        :func:`model_files`; () for a path that is no directory (a hub id).
    """
    root = Path(path)
    if not root.is_dir():
        return ()
    state = []
    for file in model_files(root):
        state.append((file.relative_to(root).as_posix(), *stat_state(file.stat())))
    return tuple(state)


def file_digest(path):
    """SHA-256 of a file's bytes, memoised by its (path, size, mtime, ctime, inode, device).

    The memo follows :mod:`skvlm._filestate`'s rule (the one image files
    follow too): a file changed in place (same size, mtime restored) is
    hashed again; an unchanged file is read once per process, and once per
    machine when the on-disk memo (see :func:`digest_memo_path`) is writable.
    """
    return _DIGESTS(path)


def digest_memo_path():
    """Where file digests are remembered across processes (None: nowhere).

    ``$SKVLM_CACHE_DIR/file-digests.json``, else under ``$XDG_CACHE_HOME/skvlm``
    or ``~/.cache/skvlm``. Set ``SKVLM_CACHE_DIR=""`` to keep digests in memory
    only.
    """
    base = os.environ.get("SKVLM_CACHE_DIR")
    if base is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        base = os.path.join(xdg, "skvlm")
    return os.path.join(base, "file-digests.json") if base else None


def _memo_key(memo):
    return "|".join(map(str, memo))


def _disk_memo():
    path = digest_memo_path()
    if path is None:
        return {}
    try:
        with open(path) as file:
            memo = json.load(file)
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _recall_from_disk(memo):
    with _DIGEST_LOCK:
        return _disk_memo().get(_memo_key(memo))


def _remember_on_disk(memo, value):
    """Add one digest to the on-disk memo; a memo that cannot be written is skipped."""
    path = digest_memo_path()
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _DIGEST_LOCK:
            known = _disk_memo()
            known[_memo_key(memo)] = value
            if len(known) > 10_000:  # forget the oldest entries
                known = dict(list(known.items())[-5_000:])
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as file:
                json.dump(known, file)
            os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: digests stay per process


_DIGESTS = FileDigests(
    hashlib.sha256, chunk=1 << 24, recall=_recall_from_disk, remember=_remember_on_disk
)


def directory_digest(path):
    """A hash of every file of a model directory (names and contents).

    A directory holding a PEFT adapter (``adapter_config.json``) also covers
    its base model, when that is a local directory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skvlm.models import directory_digest
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "model.safetensors").write_bytes(b"weights")
    >>> before = directory_digest(d)
    >>> _ = (d / "model.safetensors").write_bytes(b"Weights")
    >>> directory_digest(d) == before
    False
    """
    digest = hashlib.sha256()
    root = Path(path)
    for file in model_files(root):
        digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
        digest.update(file_digest(file).encode())
    adapter_config = root / "adapter_config.json"
    if adapter_config.is_file():
        try:
            base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        except ValueError:
            base = None
        if base and os.path.isdir(base) and Path(base).resolve() != root.resolve():
            digest.update(b"base\0" + directory_digest(base).encode())
    return digest.hexdigest()
