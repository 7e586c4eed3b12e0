"""Which features matter: fast exact permutation importance, by column or group,
and spatial importance maps over image patches."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._groups": ["groups_from_feature_names"],
        "._overlay": ["plot_spatial_importance"],
        "._permutation": ["permutation_importance"],
        "._spatial": ["patch_tokens", "spatial_importance"],
    },
)
