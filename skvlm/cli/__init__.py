"""The ``skvlm`` command: probe layers, score zero-shot, rank features, extract, tune.

Every sub-command runs offline on the embedded demo models and digit images
when given no data (and says so), and on a folder of class subfolders or a
CSV manifest otherwise, with a real checkpoint by default. ``skvlm sites
MODEL`` lists what a model offers, ``skvlm families`` what each family
supports. Errors print one line on stderr (a traceback only with
``--debug``); the exit status is 0 on success, 1 on an error, 2 on bad
arguments and 130 on Ctrl-C.

One module per sub-command (``_probe``, ``_zero_shot``, ``_importance``,
``_extract``, ``_sites``, ``_families``, ``_tune``), each with its
``add_parser`` and ``run``; ``_main`` builds the parser and runs one. Only the
standard library is imported at start-up: ``skvlm --help`` answers without
loading torch or transformers.
"""

from ._main import main

__all__ = ["main"]
