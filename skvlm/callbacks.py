"""Callbacks: user code that runs at named points of a long computation.

Every skvlm estimator that runs a model or trains one takes ``callbacks``, a
list of objects with any of the methods below. Each method is called with the
estimator and keyword arguments that describe the moment (the ``info`` of each
event below); a callback ignores the keywords it does not need (take
``**info``). Progress bars, logging to TensorBoard or Weights & Biases through
their own libraries, early stopping and the test suite's own probes all use
this one mechanism; the library has no other hook.

Events
------
``on_fit_begin(estimator, **info)``
    Before any work of ``fit``; info: ``n_samples``.
``on_batch_end(estimator, **info)``
    After a batch of images went through the model (extraction, scoring,
    generation); info: ``n_done``, ``n_total`` (images), ``keys`` (the
    content keys of the batch's images, see :mod:`skvlm.store`), ``stage``.
``on_step_end(estimator, **info)``
    After an optimiser step (fine-tuning); info: ``step``, ``n_steps``,
    ``loss``, ``learning_rate``, ``epoch``.
``on_epoch_end(estimator, **info)``
    After an epoch; info: ``epoch``, ``train_loss``, ``valid_loss`` (None
    without a validation split), ``valid_score``.
``on_fit_end(estimator, **info)``
    After ``fit`` finished, early-stopped or not; info: ``stopped_early``.

A callback stops training early by raising :class:`StopTraining` from
``on_step_end`` or ``on_epoch_end``: the estimator finishes the step, keeps
what it learnt so far and returns from ``fit`` as fitted.

Examples
--------
>>> from skvlm.callbacks import Callback, notify
>>> class CountBatches(Callback):
...     def __init__(self):
...         self.n = 0
...     def on_batch_end(self, estimator, **info):
...         self.n += 1
>>> counter = CountBatches()
>>> notify([counter], "on_batch_end", None, n_done=4, n_total=8)
>>> notify([counter], "on_step_end", None, step=1)  # counter has no such method
>>> counter.n
1
"""

from __future__ import annotations

import sys

__all__ = [
    "EVENTS",
    "Callback",
    "ProgressBar",
    "StopTraining",
    "check_callbacks",
    "notify",
]

EVENTS = (
    "on_fit_begin",
    "on_batch_end",
    "on_step_end",
    "on_epoch_end",
    "on_fit_end",
)


class StopTraining(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a callback to end training after the current step or epoch."""


class Callback:
    """Base class with a no-op method per event; subclass and override any.

    Subclassing is optional: any object with some of the event methods is a
    callback.
    """

    def on_fit_begin(self, estimator, **info):
        """Called before any work of ``fit``."""

    def on_batch_end(self, estimator, **info):
        """Called after each batch of images went through the model."""

    def on_step_end(self, estimator, **info):
        """Called after each optimiser step."""

    def on_epoch_end(self, estimator, **info):
        """Called after each epoch."""

    def on_fit_end(self, estimator, **info):
        """Called after ``fit`` finished."""


def check_callbacks(callbacks, name="callbacks"):
    """Validate a ``callbacks`` parameter; return it as a list.

    Raises
    ------
    TypeError
        For an item with none of the event methods: the message names the
        item's index and the methods a callback may have.
    """
    if callbacks is None:
        return []
    if not isinstance(callbacks, list | tuple):
        callbacks = [callbacks]
    for index, callback in enumerate(callbacks):
        if not any(callable(getattr(callback, event, None)) for event in EVENTS):
            raise TypeError(
                f"{name}[{index}] = {callback!r} has none of the callback "
                f"methods {', '.join(EVENTS)}; pass an object with at least one "
                "(subclass skvlm.callbacks.Callback)."
            )
    return list(callbacks)


def notify(callbacks, event, estimator, **info):
    """Call ``event`` on every callback that has it, in order.

    :class:`StopTraining` propagates (after every callback has been told), so
    the training loop decides where it stops; any other exception propagates
    at once.
    """
    stop = None
    for callback in callbacks or ():
        method = getattr(callback, event, None)
        if method is None:
            continue
        try:
            method(estimator, **info)
        except StopTraining as exc:
            stop = exc
    if stop is not None:
        raise stop


class ProgressBar(Callback):
    """A tqdm bar over the images of each run of a model: skvlm's ``verbose>=1``.

    Estimators that run a model add one to their callbacks when ``verbose`` is
    1 or more; at 2 it also writes a line per batch. A bar opens at a run's
    first ``on_batch_end`` (so a run served entirely from a store shows none)
    and closes when ``n_done`` reaches ``n_total``.

    Parameters
    ----------
    desc : str, default=None
        The bar's label (None: the ``stage`` of the events).
    verbose : int, default=1
        2 adds a line per batch.

    Examples
    --------
    >>> from skvlm.callbacks import ProgressBar, notify
    >>> bar = ProgressBar("demo", verbose=0)  # verbose=0: counts, shows nothing
    >>> notify([bar], "on_batch_end", None, n_done=2, n_total=4, stage="vision")
    >>> bar.n_done
    2
    """

    def __init__(self, desc=None, verbose=1):
        self.desc = desc
        self.verbose = verbose
        self.n_done = 0
        self._bar = None

    def on_batch_end(self, estimator, *, n_done, n_total, stage=None, **info):
        from tqdm.auto import tqdm

        if self._bar is not None and n_done < self._bar.n:
            self.close()  # a new run began before the last one finished
        if self._bar is None:
            self._bar = tqdm(
                total=n_total,
                desc=self.desc or stage or "images",
                unit="image",
                disable=self.verbose < 1,
            )
        self._bar.update(n_done - self._bar.n)
        self.n_done = n_done
        if self.verbose >= 2:
            tqdm.write(f"{self._bar.desc}: {n_done}/{n_total} images", file=sys.stderr)
        if n_done >= n_total:
            self.close()

    def on_fit_end(self, estimator, **info):
        self.close()

    def close(self):
        """Close the open bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __getstate__(self):
        return {**self.__dict__, "_bar": None}
