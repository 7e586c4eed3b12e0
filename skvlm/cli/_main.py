"""The ``skvlm`` parser and entry point: each sub-command is a module beside it."""

from __future__ import annotations

import argparse
import re
import sys
import traceback
import warnings

from . import (
    _extract,
    _families,
    _importance,
    _probe,
    _sites,
    _tune,
    _zero_shot,
)
from ._common import HelpFormatter, quiet_libraries

#: The sub-commands, in the order ``skvlm --help`` lists them.
COMMANDS = (
    _probe,
    _zero_shot,
    _importance,
    _extract,
    _sites,
    _families,
    _tune,
)


def build_parser():
    """The ``skvlm`` argument parser, one sub-parser per command module."""
    parser = argparse.ArgumentParser(
        prog="skvlm",
        formatter_class=HelpFormatter,
        description="Probe, score, inspect and fine-tune vision-language models "
        "with scikit-learn. With no --data, each command runs on the embedded "
        "digit images and a tiny shipped model, offline. `skvlm COMMAND --help` "
        "shows a command's options.",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, HelpFormatter)
    return parser


def main(argv=None):
    """Run the ``skvlm`` command line.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 1 on an error, 2 on bad arguments, 130 on interrupt.

    Examples
    --------
    >>> from skvlm.cli import main
    >>> main(["--version"])
    skvlm 0.1.0
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments
        return int(exc.code or 0)
    if getattr(args, "version", False):
        from .. import __version__

        print(f"skvlm {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv
    try:
        with warnings.catch_warnings(), quiet_libraries(args):
            status = args.run(args)
    except KeyboardInterrupt:
        print("skvlm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        if "on_error" in message and hasattr(args, "on_error"):
            message = command_line_fix(message, args)
        print(f"skvlm {args.command}: error: {message}", file=sys.stderr)
        return 1
    return int(status or 0)


def command_line_fix(message, args):
    """An image error's Python advice (``on_error='nan'``) in the command's terms."""
    choices = " or ".join(f"--on-error {c}" for c in args.on_error_choices[1:])
    fix = f"pass {choices} to go on without it"
    message = re.sub(r"\(?(pass )?on_error='(nan|skip)'[^.;)]*\)?", fix, message)
    return message
