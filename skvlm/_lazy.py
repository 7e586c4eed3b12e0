"""Lazy package attributes (PEP 562), so that ``import skvlm`` stays cheap.

torch and transformers take seconds to import. A package ``__init__`` that
imported its modules eagerly would make ``import skvlm`` and ``skvlm --help``
pay that even when nothing needs a model. Each ``__init__`` instead declares
which module provides which public name; a name's module is imported the
first time the name is read (``skvlm.VLMEmbeddingTransformer``, ``from skvlm
import VLMEmbeddingTransformer``), then cached in the package's namespace.
"""

import importlib


def attach(package, exports, submodules=(), internal=None):
    """``(__getattr__, __dir__, __all__)`` for a package with lazy attributes.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : dict of str to list of str
        Relative module name (``"._embedding"``) to the public names it
        provides.
    submodules : iterable of str, default=()
        Public submodules reachable as attributes (``skvlm.inspection``),
        imported on first access as an eager ``__init__`` would have.
    internal : dict of str to list of str, default=None
        Like ``exports``, for names other skvlm packages import from this
        one but users should not: reachable as attributes, left out of
        ``__all__`` (so out of ``from package import *``, the API reference
        and the glossary's walk).

    Returns
    -------
    getattr_, dir_, all_ : callable, callable, list of str
        To assign to the package's ``__getattr__``, ``__dir__`` and ``__all__``.

    Examples
    --------
    >>> from skvlm._lazy import attach
    >>> getattr_, dir_, all_ = attach("skvlm", {"._inputs": ["ImageLoadError"]})
    >>> getattr_("ImageLoadError").__name__
    'ImageLoadError'
    >>> all_
    ['ImageLoadError']
    """
    where = {name: module for module, names in exports.items() for name in names}
    public = sorted(where)
    for module, names in (internal or {}).items():
        where.update(dict.fromkeys(names, module))
    submodules = frozenset(submodules)

    def __getattr__(name):
        if name in where:
            module = importlib.import_module(where[name], package)
            value = getattr(module, name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace = importlib.import_module(package).__dict__
        namespace[name] = value  # later reads skip __getattr__
        return value

    def __dir__():
        namespace = importlib.import_module(package).__dict__
        return sorted(set(namespace) | set(where) | submodules)

    return __getattr__, __dir__, public
