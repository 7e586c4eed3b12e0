"""``skvlm sites MODEL``: what a model offers, without loading its weights."""

from __future__ import annotations

from ._common import add_output_options


def add_parser(sub, formatter):
    sites = sub.add_parser(
        "sites",
        formatter_class=formatter,
        help="list a model's stages, layers, poolings and widths",
        description="List every (stage, layer, pooling) site a model offers and "
        "the width of its features, without loading its weights (the same as "
        "skvlm.models.describe_sites(MODEL) in Python).",
    )
    sites.add_argument("model", help="model id, local directory or shipped name")
    sites.add_argument(
        "--format",
        choices=("table", "csv"),
        default="table",
        help="a summary per stage (table) or one row per site (csv)",
    )
    sites.add_argument(
        "--modules",
        nargs="?",
        const="*",
        metavar="GLOB",
        help="list the model's named modules (those matching GLOB; all when "
        "GLOB is left out), for VLMEmbeddingTransformer(module=...) (default: "
        "list the sites, not the modules)",
    )
    add_output_options(sites)
    sites.set_defaults(run=run)


def run(args):
    """``skvlm sites MODEL``: the stages, layers, poolings and widths of a model."""
    from ..models import describe_sites

    if getattr(args, "modules", None):
        return _run_modules(args)
    sites = describe_sites(args.model)
    if args.format == "csv":
        print(sites.to_csv(index=False), end="")
        return
    print(f"{args.model} ({sites.attrs['family']}): {len(sites)} sites")
    print(f"{'stage':<10} {'layers':<7} {'dim':>5}  {'auto':<7} poolings")
    for stage, info in sites.attrs["stages"].items():
        here = sites[sites["stage"] == stage]
        poolings = []
        for pooling in dict.fromkeys(here["pooling"]):
            at = here.loc[here["pooling"] == pooling, "layer"].tolist()
            where = "" if len(at) == info["n_layers"] else f" (layer {_span(at)})"
            poolings.append(f"{pooling}{where}")
        if info["max_position"] is not None:
            bound = info["max_position"]
            poolings.append(f"int positions {-bound - 1}..{bound}")
        print(
            f"{stage:<10} {_span(range(info['n_layers'])):<7} {info['dim']:>5}  "
            f"{info['auto_pooling']:<7} {', '.join(poolings)}"
        )


def _span(layers):
    layers = list(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def _run_modules(args):
    """``skvlm sites MODEL --modules [GLOB]``: the named modules, for module sites."""
    from ..models import describe_modules

    modules = describe_modules(args.model, args.modules)
    if args.format == "csv":
        print(modules.to_csv(index=False), end="")
        return
    width = max(modules["module"].str.len().max(), len("module"))
    print(f"{'module':<{width}}  type")
    for name, kind in modules.itertuples(index=False):
        print(f"{name:<{width}}  {kind}")
