"""Which features matter: fast exact permutation importance, by column or group,
and spatial importance maps over image patches."""

from ._groups import groups_from_feature_names
from ._overlay import plot_spatial_importance
from ._permutation import permutation_importance
from ._spatial import patch_tokens, spatial_importance

__all__ = [
    "groups_from_feature_names",
    "patch_tokens",
    "permutation_importance",
    "plot_spatial_importance",
    "spatial_importance",
]
