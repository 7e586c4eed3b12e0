"""Validation of what a feature store is given: names, sites, settings, vectors."""

import re
from collections.abc import Mapping, Sequence

import numpy as np

# Lower case only: keys and namespaces are file names, and a case-insensitive
# file system (macOS, Windows) would otherwise merge two of them.
_NAME = re.compile(r"[0-9a-z_-]{1,128}")
_DTYPES = ("float16", "float32")


def check_name(value, what):
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not valid: use 1 to 128 characters from "
            "0-9, a-z, '_' and '-' (a lower-case hex digest fits)."
        )
    return value


def check_keys(keys):
    if isinstance(keys, str) or not isinstance(keys, Sequence | np.ndarray):
        raise TypeError(f"keys must be a sequence of str, got {type(keys).__name__}")
    keys = list(keys)
    for i, key in enumerate(keys):
        check_name(key, f"keys[{i}]")
    return keys


def check_site(site):
    if not isinstance(site, str) or not site or site == "__metadata__":
        raise ValueError(f"site {site!r} must be a non-empty str (not '__metadata__')")
    return site


def check_settings(dtype, max_bytes, memory_cache_bytes):
    """The store's settings, normalised: ``(dtype name, max_bytes, cache bytes)``.

    (``keep`` is checked by ``_keep.check_keep``.)
    """
    try:
        name = None if dtype is None else np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(
            f"dtype={dtype!r} is not supported; use 'float16' or 'float32'"
        )
    for value, what in (
        (max_bytes, "max_bytes"),
        (memory_cache_bytes, "memory_cache_bytes"),
    ):
        if value is None and what == "max_bytes":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < 0
        ):
            raise ValueError(f"{what}={value!r} must be a non-negative int (bytes)")
    return name, None if max_bytes is None else int(max_bytes), int(memory_cache_bytes)


def check_vectors(vectors, n):
    """``{site: float32 array (n, d)}`` from the ``vectors`` of a write."""
    if not isinstance(vectors, Mapping) or not vectors:
        raise TypeError(
            "vectors must be a non-empty dict {site: array (n_keys, n_features)}"
        )
    arrays = {}
    for site, array in vectors.items():
        check_site(site)
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[0] != n:
            raise ValueError(
                f"vectors[{site!r}] has shape {array.shape}; expected "
                f"(n_keys={n}, n_features): one row per key."
            )
        if array.dtype.kind not in "fiu":
            raise ValueError(
                f"vectors[{site!r}] has dtype {array.dtype}; expected floats"
            )
        arrays[site] = array.astype(np.float32, copy=False)
    return arrays
