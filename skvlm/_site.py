"""Site: one (stage, layer, pooling) triple, the unit that is stored and searched.

A site is written in three places, always through this type: the store's name
(``vision/l3/mean``), the prefix of the transformer's column names
(``vision_l3_mean``, then ``_0``, ``_1``...), and the layer checks, which all go
through :func:`resolve_layers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral

from .pooling import is_position, pooling_label

STAGES = ("vision", "projector", "language")

_POOLING = r"(?P<pooling>pos-?\d+|[a-z][a-z_]*?)"
_STORE_NAME = re.compile(rf"^(?P<stage>[a-z]+)/l(?P<layer>-?\d+)/{_POOLING}$")
_PREFIX = re.compile(rf"^(?P<stage>[a-z]+)_l(?P<layer>-?\d+)_{_POOLING}$")
# A column name; a FeatureUnion or ColumnTransformer may prepend "{step}__".
_FEATURE_NAME = re.compile(
    rf"^(?P<step>.*__)?(?P<stage>[A-Za-z]+)_l(?P<layer>-?\d+)_{_POOLING}_(?P<index>\d+)$"
)


def _pooling_from_label(label):
    return int(label[3:]) if re.fullmatch(r"pos-?\d+", label) else label


@dataclass(frozen=True, order=True)
class Site:
    """Where a feature vector comes from: stage, layer and pooling.

    Parameters
    ----------
    stage : {"vision", "projector", "language"}
    layer : int
        Index into the stage's stack. skvlm's own sites are resolved
        (non-negative, see :func:`resolve_layers`); a negative layer counts from
        the end, as in names users write.
    pooling : str or int
        A pooling name, or an int token position.

    Examples
    --------
    >>> from skvlm import Site
    >>> site = Site("vision", 3, "mean")
    >>> site.store_name, site.feature_prefix
    ('vision/l3/mean', 'vision_l3_mean')
    >>> Site.parse("language/l2/pos-1")
    Site(stage='language', layer=2, pooling=-1)
    >>> Site.parse("vision_l3_image_mean") == Site("vision", 3, "image_mean")
    True
    """

    stage: str
    layer: int
    pooling: str | int

    def __post_init__(self):
        if isinstance(self.layer, bool) or not isinstance(self.layer, Integral):
            raise TypeError(f"Site layer must be an int, got {self.layer!r}.")
        if not is_position(self.pooling) and not isinstance(self.pooling, str):
            raise TypeError(
                f"Site pooling must be a name or an int position, got {self.pooling!r}."
            )

    @property
    def label(self):
        """The pooling as written in names (``pos-1`` for the int -1)."""
        return pooling_label(self.pooling)

    @property
    def store_name(self):
        """The store's name of the site, ``{stage}/l{layer}/{pooling}``."""
        return f"{self.stage}/l{self.layer}/{self.label}"

    @property
    def feature_prefix(self):
        """The prefix of the site's column names, ``{stage}_l{layer}_{pooling}``."""
        return f"{self.stage}_l{self.layer}_{self.label}"

    def feature_names(self, width):
        """The site's column names, ``{feature_prefix}_{i}`` for i < width."""
        return [f"{self.feature_prefix}_{i}" for i in range(width)]

    @classmethod
    def parse(cls, text):
        """The site named by a store name or a feature-name prefix.

        Parameters
        ----------
        text : str
            ``"vision/l3/mean"`` or ``"vision_l3_mean"``.

        Returns
        -------
        Site
        """
        match = _STORE_NAME.match(text) or _PREFIX.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} names no site; expected '{{stage}}/l{{layer}}/{{pooling}}' "
                "(a store name, e.g. 'vision/l3/mean') or "
                "'{stage}_l{layer}_{pooling}' (a column prefix, e.g. 'vision_l3_mean')."
            )
        return cls(
            match["stage"], int(match["layer"]), _pooling_from_label(match["pooling"])
        )

    @classmethod
    def parse_feature_name(cls, name):
        """``(step prefix, site, column index)`` of a transformer's column name.

        Parameters
        ----------
        name : str
            ``"{stage}_l{layer}_{pooling}_{i}"``, optionally after ``"{step}__"``
            (as a FeatureUnion or ColumnTransformer writes it).

        Returns
        -------
        tuple of (str, Site, int)
            The prefix is ``""`` when there is none.

        Examples
        --------
        >>> from skvlm import Site
        >>> Site.parse_feature_name("vlm__vision_l3_cls_12")
        ('vlm__', Site(stage='vision', layer=3, pooling='cls'), 12)
        """
        match = _FEATURE_NAME.match(str(name))
        if match is None:
            raise ValueError(
                f"Feature name {name!r} does not look like "
                "'{stage}_l{layer}_{pooling}_{i}' (the VLMEmbeddingTransformer "
                "naming)."
            )
        site = cls(
            match["stage"], int(match["layer"]), _pooling_from_label(match["pooling"])
        )
        return match["step"] or "", site, int(match["index"])


def resolve_layers(layers, n_layers, *, stage, family=None):
    """Non-negative stack indices of ``layers``, checked against the stack's size.

    Parameters
    ----------
    layers : int or sequence of int
        Indices into the stage's stack; negative ones count from the end.
    n_layers : int
        Entries in the stack.
    stage : str
        For messages.
    family : str, default=None
        The model family, for messages.

    Returns
    -------
    list of int
        In the order given (repeats kept).

    Examples
    --------
    >>> from skvlm._site import resolve_layers
    >>> resolve_layers([0, -1], 13, stage="vision")
    [0, 12]
    """
    items = [layers] if isinstance(layers, Integral) else list(layers)
    if not items:
        raise ValueError("layer is an empty list; give at least one layer index.")
    model = f" of the {family} model" if family else ""
    resolved = []
    for layer in items:
        if isinstance(layer, bool) or not isinstance(layer, Integral):
            raise TypeError(f"layer entries must be ints, got {layer!r}.")
        if not -n_layers <= layer < n_layers:
            raise ValueError(
                f"layer={layer} is out of range for stage {stage!r}{model}, whose "
                f"stack has {n_layers} entries; use a layer in "
                f"[{-n_layers}, {n_layers - 1}]."
            )
        resolved.append(int(layer) % n_layers)
    return resolved
