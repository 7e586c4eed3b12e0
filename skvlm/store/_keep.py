"""What a forward pass keeps in a store: the ``keep`` setting and its fill plans.

A pass computes the hidden states of every layer up to the deepest one asked,
and pooling them is cheap, so a store could keep every (layer, pooling) site of
the stage and serve any later request without running the model again. For a
7B language model that is 33 layers x 5 poolings x 4096 floats, 2.7 MB per
image in float32: ``keep`` lets the user choose, and a :class:`FillPlan` says
what a fill will write before it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral

#: keep="auto" keeps every site of a pass when they cost at most this many bytes
#: per image in the store's dtype (CLIP- and SigLIP-sized vision towers), and
#: otherwise the asked pooling at every layer (7B language stages).
AUTO_BYTES_PER_IMAGE = 2**20
# Bytes an entry adds to its vectors: about 100 per site (its line in the
# JSON header and its checksum) and 200 per entry (metadata, pack index).
SITE_OVERHEAD, ENTRY_OVERHEAD = 100, 200
_WORDS = ("auto", "all", "requested")
_ITEMSIZE = {"float16": 2, "float32": 4}


def check_keep(keep):
    """``keep`` normalised: one of the words, or ``{"layers", "poolings"}``."""
    if isinstance(keep, str) and keep in _WORDS:
        return keep
    if isinstance(keep, Mapping) and keep and set(keep) <= {"layers", "poolings"}:
        out = {}
        for name in ("layers", "poolings"):
            value = keep.get(name, "all")
            if value == "all":
                out[name] = "all"
                continue
            if isinstance(value, (str, Integral)):
                value = [value]
            value = tuple(value)
            if name == "layers" and not all(
                isinstance(v, Integral) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"keep['layers']={value!r} must be ints or 'all'.")
            if name == "poolings" and not all(
                isinstance(v, (str, Integral)) and not isinstance(v, bool)
                for v in value
            ):
                raise ValueError(
                    f"keep['poolings']={value!r} must be pooling names, int "
                    "positions, or 'all'."
                )
            out[name] = tuple(int(v) if isinstance(v, Integral) else v for v in value)
        return out
    raise ValueError(
        f"keep={keep!r} is not valid: use 'auto', 'all', 'requested', or a dict "
        "such as {'layers': [0, 8, 16, -1], 'poolings': ['last', 'mean']} (either "
        "key may be 'all')."
    )


def keep_repr(keep):
    return repr(keep if isinstance(keep, str) else dict(keep))


@dataclass
class FillPlan:
    """What a fill keeps for each image, and what that costs.

    Made by :meth:`FeatureStore.plan`. ``requests`` are the chosen site
    objects (what the forward pass must compute), ``sites`` their store names.

    Attributes
    ----------
    requests : list
        The chosen sites (objects with ``layer``, ``pooling``, ``store_name``).
    sites : list of str
        Their store names.
    width : int
        Floats per site.
    itemsize : int
        Bytes per float on disk (2 for a float16 store, 4 for float32).
    policy : str
        How the sites were chosen, in words.
    options : dict
        ``{description: bytes per image}`` of the other choices, for messages.
    """

    requests: list
    sites: list
    width: int
    itemsize: int
    policy: str
    options: dict = field(default_factory=dict)

    @property
    def bytes_per_image(self):
        """Estimated bytes one image's entry takes on disk."""
        return entry_bytes(len(self.sites), self.width, self.itemsize)

    def nbytes(self, n_images):
        """Estimated bytes a fill of ``n_images`` writes."""
        return n_images * self.bytes_per_image

    def describe(self, n_images):
        """One line: images x sites x width = bytes, and the policy."""
        return (
            f"{n_images} images x {len(self.sites)} sites x {self.width} "
            f"{'float16' if self.itemsize == 2 else 'float32'} = about "
            f"{format_bytes(self.nbytes(n_images))} "
            f"({format_bytes(self.bytes_per_image)} per image; {self.policy})"
        )


def entry_bytes(n_sites, width, itemsize):
    if not n_sites:
        return 0
    return n_sites * (width * itemsize + SITE_OVERHEAD) + ENTRY_OVERHEAD


def format_bytes(n):
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def plan(keep, requested, available, width, dtype):
    """The :class:`FillPlan` of ``keep`` for a request.

    Parameters
    ----------
    keep : str or dict
        As checked by :func:`check_keep`.
    requested : sequence of site objects
        What the caller asked for (always kept: a grid point's folds then read
        what its first fold computed).
    available : sequence of site objects
        Every site the pass can give (``layer``, ``pooling``, ``store_name``).
    width : int
        Floats per site.
    dtype : {"float16", "float32"}
    """
    itemsize = _ITEMSIZE[dtype]
    requested = _unique(requested)
    available = _unique([*available, *requested])
    asked_poolings = {s.pooling for s in requested}
    along = [s for s in available if s.pooling in asked_poolings or s in requested]

    def cost(sites):
        return entry_bytes(len(sites), width, itemsize)

    if keep == "all":
        chosen, policy = available, "keep='all': every site of the pass"
    elif keep == "requested":
        chosen, policy = requested, "keep='requested': the sites asked for"
    elif keep == "auto":
        if cost(available) <= AUTO_BYTES_PER_IMAGE:
            chosen = available
            policy = (
                "keep='auto': every site of the pass (at most "
                f"{format_bytes(AUTO_BYTES_PER_IMAGE)} per image)"
            )
        else:
            chosen = along
            policy = (
                "keep='auto': the asked pooling at every layer (every site would "
                f"take {format_bytes(cost(available))} per image; "
                "keep='all' keeps them)"
            )
    else:
        chosen = _by_spec(keep, available, requested)
        policy = f"keep={keep_repr(keep)} and the sites asked for"
    asked = sorted(asked_poolings, key=str)
    options = {
        "keep='all'": cost(available),
        f"keep={{'poolings': {asked!r}}} (the asked pooling at every layer)": cost(
            along
        ),
        "keep='requested'": cost(requested),
    }
    return FillPlan(
        requests=chosen,
        sites=[s.store_name for s in chosen],
        width=int(width),
        itemsize=itemsize,
        policy=policy,
        options=options,
    )


def _unique(sites):
    seen, out = set(), []
    for site in sites:
        if site.store_name not in seen:
            seen.add(site.store_name)
            out.append(site)
    return out


def _by_spec(spec, available, requested):
    n_layers = 1 + max((s.layer for s in available), default=-1)
    layers = spec["layers"]
    if layers != "all":
        layers = {layer + n_layers if layer < 0 else layer for layer in layers}
    poolings = spec["poolings"]
    picked = [
        s
        for s in available
        if (layers == "all" or s.layer in layers)
        and (poolings == "all" or s.pooling in poolings)
    ]
    return _unique([*picked, *requested])
