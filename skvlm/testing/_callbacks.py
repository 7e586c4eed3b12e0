"""A callback that counts forward passes across processes."""

from __future__ import annotations

import os

from ..callbacks import Callback


class KeyLog(Callback):
    """Append the content key of every image run through a model to a file.

    Pass it in an estimator's ``callbacks``: after each batch, the keys of its
    images (see :mod:`skvlm.store`) are appended to ``path``, one per line,
    in one ``O_APPEND`` write, so processes that share the file (joblib
    workers, Ray actors: the callback is pickled with the estimator) never
    interleave their lines. Counting the lines counts forward passes; a store
    that serves an image adds none.

    Parameters
    ----------
    path : str or path-like
        The file to append to (created if missing).

    Examples
    --------
    >>> import tempfile, os
    >>> from skvlm import VLMEmbeddingTransformer
    >>> from skvlm.testing import KeyLog, make_tiny_clip, random_images
    >>> log = KeyLog(os.path.join(tempfile.mkdtemp(), "keys.txt"))
    >>> vlm = VLMEmbeddingTransformer(make_tiny_clip(tempfile.mkdtemp()),
    ...                               verbose=0, callbacks=[log])
    >>> _ = vlm.fit_transform(random_images(3))
    >>> len(log.read())
    3
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def on_batch_end(self, estimator, *, keys=None, **info):
        if not keys:
            return
        lines = "".join(f"{key}\n" for key in keys).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)

    def read(self):
        """The keys logged so far, in order (an empty list before any)."""
        try:
            with open(self.path) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def clear(self):
        """Forget the keys logged so far."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
