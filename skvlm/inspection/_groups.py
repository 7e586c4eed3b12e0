"""Feature groups: which columns are permuted together."""

from collections.abc import Mapping
from numbers import Integral

import numpy as np

from .._site import Site
from .._sklearn_compat import StrOptions, validate_params

# What names a group, from a column's (step prefix, site).
_GROUP_KEYS = {
    "stage": lambda step, site: f"{step}{site.stage}",
    "layer": lambda step, site: f"{step}{site.stage}_l{site.layer}",
    "site": lambda step, site: f"{step}{site.feature_prefix}",
}


@validate_params(
    {"feature_names": ["array-like"], "by": [StrOptions({"layer", "stage", "site"})]},
    prefer_skip_nested_validation=True,
)
def groups_from_feature_names(feature_names, by="layer"):
    """Group embedding columns by stage, layer or site from their names.

    Column names of ``VLMEmbeddingTransformer`` follow
    ``{stage}_l{layer}_{pooling}_{i}`` (for example ``vision_l3_cls_0``), so a
    transformer with a list of layers yields one group per layer.

    Parameters
    ----------
    feature_names : array-like of str
        Column names, e.g. from ``get_feature_names_out()``. A ``"{step}__"``
        prefix added by a ``FeatureUnion`` is kept in the group name.
    by : {"layer", "stage", "site"}, default="layer"
        ``"layer"`` groups ``{stage}_l{layer}`` (all poolings of a layer
        together), ``"stage"`` groups by stage, ``"site"`` by
        ``{stage}_l{layer}_{pooling}``.

    Returns
    -------
    groups : dict of str to list of int
        Group name to column indices, in order of first appearance; ready for
        the ``groups`` argument of ``permutation_importance``.

    Examples
    --------
    >>> from skvlm.inspection import groups_from_feature_names
    >>> names = ["vision_l3_cls_0", "vision_l3_cls_1", "vision_l6_cls_0",
    ...          "vision_l6_cls_1"]
    >>> groups_from_feature_names(names)
    {'vision_l3': [0, 1], 'vision_l6': [2, 3]}
    >>> groups_from_feature_names(names, by="stage")
    {'vision': [0, 1, 2, 3]}
    """
    if by not in _GROUP_KEYS:
        raise ValueError(
            f"by={by!r} is not supported; use one of {sorted(_GROUP_KEYS)}."
        )
    group_of = _GROUP_KEYS[by]
    groups = {}
    for i, name in enumerate(np.asarray(feature_names, dtype=object)):
        try:
            step, site, _ = Site.parse_feature_name(name)
        except ValueError:
            raise ValueError(
                f"Feature name {name!r} at index {i} does not look like "
                "'{stage}_l{layer}_{pooling}_{i}' (the VLMEmbeddingTransformer "
                "naming); pass an explicit mapping to `groups` instead."
            ) from None
        groups.setdefault(group_of(step, site), []).append(i)
    return groups


def resolve_groups(groups, n_features, column_names):
    """Turn the user's ``groups`` into (list of index arrays, names or None)."""
    if groups is None:
        return [np.array([j]) for j in range(n_features)], None
    if not isinstance(groups, Mapping) or len(groups) == 0:
        raise ValueError(
            "groups must be a non-empty mapping of group name to column indices "
            f"(or column names); got {type(groups).__name__} {groups!r:.80}."
        )
    lookup = None
    if column_names is not None:
        lookup = {str(c): j for j, c in enumerate(column_names)}
    units = []
    for name, cols in groups.items():
        if isinstance(cols, str | Integral):
            cols = [cols]
        idx = []
        for c in cols:
            if isinstance(c, Integral) and not isinstance(c, bool):
                if not 0 <= c < n_features:
                    raise ValueError(
                        f"Group {name!r}: column index {c} is out of range for X "
                        f"with {n_features} columns; use indices in "
                        f"[0, {n_features - 1}]."
                    )
                idx.append(int(c))
            elif isinstance(c, str):
                if lookup is None:
                    raise ValueError(
                        f"Group {name!r}: column {c!r} is a name but X has no "
                        "column names; pass integer indices or a DataFrame."
                    )
                if c not in lookup:
                    raise ValueError(
                        f"Group {name!r}: column {c!r} is not a column of X; "
                        f"the first columns are {list(lookup)[:5]}."
                    )
                idx.append(lookup[c])
            else:
                raise TypeError(
                    f"Group {name!r}: column {c!r} must be an int index or a "
                    f"str name, not {type(c).__name__}."
                )
        if not idx:
            raise ValueError(f"Group {name!r} is empty; give it at least one column.")
        if len(set(idx)) != len(idx):
            raise ValueError(f"Group {name!r} lists a column twice: {idx}.")
        units.append(np.asarray(idx, dtype=np.intp))
    return units, np.asarray(list(groups), dtype=object)
