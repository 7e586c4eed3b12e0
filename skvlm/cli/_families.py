"""``skvlm families``: the model families skvlm supports, and what each offers."""

from __future__ import annotations

from ._common import CLIError, add_output_options


def add_parser(sub, formatter):
    families = sub.add_parser(
        "families",
        formatter_class=formatter,
        help="list the supported model families and what each one offers",
        description="Print skvlm.models.support_matrix(): one row per model "
        "type with its kind, its stages (vision, projector, language) and "
        "whether the zero-shot classifier, the generative classifier and the "
        "tuner take it.",
    )
    families.add_argument(
        "--format",
        choices=("table", "csv"),
        default="table",
        help="an aligned table or CSV",
    )
    add_output_options(families)
    families.set_defaults(run=run)


def run(args):
    """``skvlm families``: ``skvlm.models.support_matrix()`` as a table or CSV."""
    from .. import models

    support_matrix = getattr(models, "support_matrix", None)
    if support_matrix is None:
        raise CLIError(
            "this version of skvlm has no skvlm.models.support_matrix(); "
            "`skvlm sites MODEL` lists what one model offers."
        )
    table = support_matrix()
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
        return
    short, notes = with_notes(table)
    print(short.to_string(index=False))
    for number, reason in enumerate(notes, start=1):
        print(f"[{number}] {reason}")


def with_notes(table):
    """The table with each "status: reason" cell cut to "status [n]", and the reasons.

    A reason is shared by many cells (every stage of a family skvlm cannot
    serve), so each is printed once, below the table.
    """
    notes = {}

    def cut(value):
        if not isinstance(value, str) or ": " not in value:
            return value
        status, reason = value.split(": ", 1)
        number = notes.setdefault(reason, len(notes) + 1)
        return f"{status} [{number}]"

    return table.map(cut), list(notes)
