"""Checks an estimator runs around loading its model.

The estimators default to real checkpoints; offline, a hub id cannot load, and
the error then names the models shipped with skvlm. Those tiny models serve the
demo, the command's demo mode and the tests: using one is said once per process,
since their features mean little on other images. Two settings are refused at
``fit`` instead of deep in ``transform``: a device that holds no data, and a
token position past every sequence a stage can produce.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import threading
import warnings
from contextlib import contextmanager
from numbers import Integral

#: The defaults of the estimators: real checkpoints, as skrub's TextEncoder has.
#: CLIP ViT-B/32 is the most used CLIP (600 MB, fast on a CPU); LLaVA-1.5-7B is
#: the generative model of the paper skvlm reproduces.
DEFAULT_EMBEDDING_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_ZERO_SHOT_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_GENERATIVE_MODEL = "llava-hf/llava-1.5-7b-hf"


class EmbeddedModelWarning(UserWarning):
    """A tiny model shipped with skvlm is in use: fine for demos, not for real data."""


_NOTED: set[str] = set()
_NOTED_LOCK = threading.Lock()


def _name(model):
    return os.fspath(model) if isinstance(model, os.PathLike) else model


#: Packages whose frames stand between a user's line and skvlm's code.
_CALLERS = {"skvlm", "sklearn", "joblib", "threading", "concurrent", "contextlib"}


def user_stacklevel():
    """The ``stacklevel`` that makes the caller's warning point at the user's line.

    Counts the frames above the function that calls this one, up to the first
    that belongs to none of skvlm and the libraries that run estimators
    (scikit-learn, joblib, threads): ``GridSearchCV(...).fit(X, y)`` in a script
    is reported at that line, not deep inside skvlm. In a worker thread, whose
    stack holds no user code, the outermost frame.

    Returns
    -------
    stacklevel : int

    Examples
    --------
    >>> import warnings
    >>> from skvlm.models import user_stacklevel
    >>> def warn_from_a_library():
    ...     warnings.warn("note", stacklevel=user_stacklevel())
    >>> script = {"__name__": "__main__", "warn": warn_from_a_library}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     exec(compile("warn()", "script.py", "exec"), script)
    >>> caught[0].filename
    'script.py'
    """
    frame = inspect.currentframe().f_back  # the function that warns: level 1
    level = 1
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if module.split(".")[0] not in _CALLERS:
            return level
        frame = frame.f_back
        level += 1
    return max(level - 1, 1)


def check_device(device):
    """Refuse devices that cannot compute features (``"meta"``).

    Parameters
    ----------
    device : str or torch.device

    Raises
    ------
    ValueError
        For the meta device, whose tensors have shapes but no data.

    Examples
    --------
    >>> from skvlm.models import check_device
    >>> check_device("cpu")
    >>> check_device("meta")
    Traceback (most recent call last):
    ...
    ValueError: device='meta' holds tensor shapes but no data: ...
    """
    kind = getattr(device, "type", device)
    if isinstance(kind, str) and kind.split(":")[0].strip() == "meta":
        raise ValueError(
            f"device={str(device)!r} holds tensor shapes but no data: a model "
            "loaded there cannot compute features. Use device='auto', 'cpu', "
            "'cuda' or 'mps'."
        )


def note_shipped_model(model):
    """Warn, once per process and model, that a shipped demo model is in use.

    The warning points at the user's line (:func:`user_stacklevel`). It is said
    by the main process only: joblib's worker processes
    (``GridSearchCV(n_jobs=2)``) would each repeat it, on a stderr a notebook
    does not show.

    Parameters
    ----------
    model : str or path-like
        The estimator's ``model`` parameter.
    """
    from . import shipped_models
    from ._loading import SHIPPED_PREFIX

    name = _name(model)
    # load_adapter calls this on every load: the cheap checks come before
    # listing the shipped models' directory.
    if (
        not isinstance(name, str)
        or not name.startswith(SHIPPED_PREFIX)
        or name in _NOTED
        or multiprocessing.parent_process() is not None
    ):
        return
    if name not in shipped_models():
        return
    with _NOTED_LOCK:
        if name in _NOTED:
            return
        _NOTED.add(name)
    default = DEFAULT_GENERATIVE_MODEL if "llava" in name else DEFAULT_EMBEDDING_MODEL
    warnings.warn(
        f"{name} is a tiny model shipped with skvlm for demos and tests: trained on "
        "32-px digit images, its features and answers mean little on other images. "
        f"For real data pass a real checkpoint, e.g. model={default!r}.",
        EmbeddedModelWarning,
        stacklevel=user_stacklevel(),
    )


@contextmanager
def checked_loading(model, device="auto", verbose=0):
    """Wrap an estimator's model loading with skvlm's checks and notices.

    Refuses a meta ``device`` before anything loads; adds to a
    ``ModelNotFoundError`` the names of the models that need no download; hides
    transformers' "Loading weights" bar unless ``verbose >= 2`` (the hub's download
    bars stay). :func:`skvlm.models.load_adapter` loads inside it.

    Parameters
    ----------
    model : str or path-like
        The estimator's ``model`` parameter.
    device : str or torch.device, default="auto"
        The estimator's ``device`` parameter.
    verbose : int, default=0
        The estimator's ``verbose`` parameter; 2 or more shows the bar.

    Examples
    --------
    >>> from skvlm.models import checked_loading, load_adapter
    >>> with checked_loading("skvlm/tiny-clip", device="meta"):
    ...     load_adapter("skvlm/tiny-clip", device="meta")
    Traceback (most recent call last):
    ...
    ValueError: device='meta' holds tensor shapes but no data: ...
    """
    from . import ModelNotFoundError, shipped_models

    check_device(device)
    try:
        with _loading_bars(verbose >= 2):
            yield
    except ModelNotFoundError as exc:
        name = _name(model)
        if isinstance(name, str) and name in shipped_models():
            raise
        shipped = ", ".join(repr(m) for m in shipped_models())
        raise ModelNotFoundError(
            f"{exc} Without a download, the models shipped with skvlm work: "
            f"{shipped} (tiny demo models trained on digit images, for trying the "
            "pipeline, not for real data)."
        ) from exc


@contextmanager
def _loading_bars(show):
    """transformers' own progress bars off for the block, unless ``show``."""
    from transformers.utils import logging as hf_logging

    if show or not hf_logging.is_progress_bar_enabled():
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    hub_off = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # turns the hub's off too
    if not hub_off:
        enable_progress_bars()  # a download still shows its bar
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if hub_off:
            disable_progress_bars()


def _ints(value):
    if isinstance(value, Integral):
        return [int(value)]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, Integral)]
    if isinstance(value, dict):
        return [int(v) for v in value.values() if isinstance(v, Integral)]
    return []


def max_tokens(adapter, stage):
    """An upper bound on the length of ``stage``'s sequences, or None if unknown.

    Read from the configuration, without a forward pass: the language model's
    ``max_position_embeddings`` for the language stage, and for the projector
    of a model with one (every visual token enters its sequence); for a
    fixed-resolution vision tower, its patches at the larger of the config's
    and the processor's image size, plus a CLS and any register tokens.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
    stage : str

    Returns
    -------
    bound : int or None
    """
    config = getattr(getattr(adapter, "model", None), "config", None)
    if config is None:
        return None
    if stage == "language" or (stage == "projector" and "language" in adapter.stages):
        text = config.get_text_config() if hasattr(config, "get_text_config") else None
        return getattr(text, "max_position_embeddings", None) if text else None
    if getattr(adapter, "dynamic_resolution", False):
        return None
    vision = getattr(config, "vision_config", config)
    patch = getattr(vision, "patch_size", None)
    sides = _ints(getattr(vision, "image_size", None))
    processor = getattr(adapter.processor, "image_processor", adapter.processor)
    for attr in ("crop_size", "size"):
        sides += _ints(getattr(processor, attr, None))
    patch = _ints(patch)
    if not sides or not patch or min(patch) <= 0:
        return None
    side = max(sides) // min(patch)
    return side * side + 1 + int(getattr(vision, "num_register_tokens", 0) or 0)


def check_position(adapter, stage, pooling):
    """Refuse an int token position past every sequence ``stage`` can produce.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
    stage : str
    pooling : str or int
        The resolved pooling; names pass unchecked.

    Raises
    ------
    ValueError
        When ``|pooling|`` exceeds :func:`max_tokens`.
    """
    if isinstance(pooling, bool) or not isinstance(pooling, Integral):
        return
    bound = max_tokens(adapter, stage)
    if bound is None or -bound <= pooling < bound:
        return
    raise ValueError(
        f"pooling={pooling} is a token position past every sequence of stage "
        f"{stage!r} of the {adapter.family} model: its sequences hold at most "
        f"{bound} tokens (from the model's configuration), so positions run from "
        f"{-bound} to {bound - 1}, counted among the valid tokens. Use a position "
        "in that range, or a named pooling such as 'mean'."
    )
