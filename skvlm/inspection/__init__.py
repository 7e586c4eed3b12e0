"""Which features matter: fast exact permutation importance, by column or group."""

from ._groups import groups_from_feature_names
from ._permutation import permutation_importance

__all__ = ["groups_from_feature_names", "permutation_importance"]
