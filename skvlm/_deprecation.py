"""Renamed parameters: the old name keeps working for one release, with a warning.

scikit-learn's pattern: the old parameter stays in ``__init__`` with the
default ``"deprecated"``; a value given for it is used (translated to the new
name's meaning) and ``fit`` warns with a ``FutureWarning`` naming the new
name. The glossary (``docs/glossary.rst``) lists every old name under
"Deprecated names".
"""

from __future__ import annotations

import warnings

__all__ = ["DEPRECATED", "renamed_verbose", "resolve_verbose"]

#: The default of a renamed parameter: "not given".
DEPRECATED = "deprecated"

#: The release the old names go away in.
REMOVED_IN = "0.3"


def renamed_verbose(progress, verbose, *, where, warn=True):
    """The ``verbose`` level to use when the old ``progress`` may have been given.

    Parameters
    ----------
    progress : bool or "deprecated"
        The value of the old parameter (``"deprecated"`` or None: not given).
    verbose : int
        The value of the new one.
    where : str
        What takes the parameter, for the warning (``"VLMEmbeddingTransformer"``).
    warn : bool, default=True
        Warn when ``progress`` was given.

    Returns
    -------
    verbose : int
        ``int(bool(progress))`` when ``progress`` was given, else ``verbose``.

    Examples
    --------
    >>> import warnings
    >>> from skvlm._deprecation import renamed_verbose
    >>> renamed_verbose("deprecated", 2, where="f")
    2
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed_verbose(False, 1, where="f")
    0
    >>> print(caught[0].message)
    f: `progress` was renamed to `verbose` (an int: 0 silent, 1 progress bars, 2 also a line per batch) and will be removed in 0.3; pass verbose=0 instead.
    """
    if progress is None or (isinstance(progress, str) and progress == DEPRECATED):
        return verbose
    level = int(bool(progress))
    if warn:
        warnings.warn(
            f"{where}: `progress` was renamed to `verbose` (an int: 0 silent, 1 "
            "progress bars, 2 also a line per batch) and will be removed in "
            f"{REMOVED_IN}; pass verbose={level} instead.",
            FutureWarning,
            stacklevel=3,
        )
    return level


def resolve_verbose(estimator, *, warn=False):
    """An estimator's effective ``verbose``, reading its deprecated ``progress``."""
    return renamed_verbose(
        getattr(estimator, "progress", DEPRECATED),
        getattr(estimator, "verbose", 0),
        where=type(estimator).__name__,
        warn=warn,
    )
