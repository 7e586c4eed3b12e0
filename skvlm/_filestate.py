"""When a digest of a file's bytes may be remembered: one rule for every file skvlm hashes.

Model files (``skvlm.models``) and image files (``skvlm._inputs``) are hashed
for the keys a feature store uses, and the digests are memoised so a grid
search does not read every file again for every fold. A memo is only as good
as what it keys on; the rule here is:

- Key on ``(path, size, mtime, ctime, inode, device)``. ``mtime`` can be set back
  by any user call (``os.utime``, ``cp -p``, ``rsync -t``, ``tar x``), but a
  write, a truncation, a rename over the file and ``os.utime`` itself all set
  the inode's ``ctime`` to the current time, which no user call can set back.
- Hash only a file that held still: ``stat`` before and after the read agree,
  else read it again (three tries, then :class:`FileChangingError`).
- Remember a digest only when the file's ``ctime`` is older than
  :data:`RACY_NS` when it was hashed ("racily clean", as git calls it): file
  times tick coarsely, so a file written again within the same tick after it
  was hashed would keep all its times. Such a file is hashed again next time.
"""

from __future__ import annotations

import os
import threading
import time

#: A file whose ctime is younger than this (ns) when hashed is not memoised.
RACY_NS = 2_000_000_000


class FileChangingError(OSError):
    """The file changed every time it was read; the message says what to do."""


def stat_state(st):
    """``(size, mtime_ns, ctime_ns, inode, device)``: what a memo keys on besides the path.

    Examples
    --------
    >>> import os
    >>> from skvlm._filestate import stat_state
    >>> len(stat_state(os.stat(__file__)))
    5
    """
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def is_settled(st, now_ns=None):
    """Whether a digest of the file ``st`` describes may be remembered (not racy).

    Examples
    --------
    >>> import os
    >>> from skvlm._filestate import is_settled
    >>> st = os.stat(__file__)
    >>> is_settled(st, now_ns=st.st_ctime_ns), is_settled(st, now_ns=st.st_ctime_ns + 10**10)
    (False, True)
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - st.st_ctime_ns > RACY_NS


class FileDigests:
    """Digests of files' bytes, memoised by path and :func:`stat_state`.

    Parameters
    ----------
    new_digest : callable
        Returns a fresh ``hashlib`` object (already fed any prefix).
    chunk : int, default=1 MiB
        Bytes read at a time.
    recall, remember : callable, default=None
        An outer memo (on disk, say): ``recall(memo)`` returns a known digest
        or None, ``remember(memo, digest)`` stores one; ``memo`` is the tuple
        ``(path, *stat_state)``.

    Examples
    --------
    >>> import hashlib, pathlib, tempfile
    >>> from skvlm._filestate import FileDigests
    >>> digests = FileDigests(hashlib.sha256)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "f"
    >>> _ = path.write_bytes(b"abc")
    >>> digests(path) == hashlib.sha256(b"abc").hexdigest()
    True
    """

    def __init__(self, new_digest, *, chunk=1 << 20, recall=None, remember=None):
        self._new_digest = new_digest
        self._chunk = chunk
        self._recall = recall
        self._remember = remember
        self._memo = {}
        self._lock = threading.Lock()

    def __call__(self, path):
        """The hex digest of the file's bytes (``OSError`` when it cannot be read)."""
        path = os.path.abspath(os.fspath(path))
        for _ in range(3):
            before = os.stat(path)
            memo = (path, *stat_state(before))
            with self._lock:
                known = self._memo.get(memo)
            if known is None and self._recall is not None:
                known = self._recall(memo)
            if known is not None:
                with self._lock:
                    self._memo[memo] = known
                return known
            digest = self._new_digest()
            with open(path, "rb") as file:
                for block in iter(lambda f=file: f.read(self._chunk), b""):
                    digest.update(block)
            after = os.stat(path)
            if stat_state(after) != memo[1:]:
                continue  # changed while read: read it again
            value = digest.hexdigest()
            if is_settled(after):
                with self._lock:
                    self._memo[memo] = value
                if self._remember is not None:
                    self._remember(memo, value)
            return value
        raise FileChangingError(
            f"{path!r} kept changing while skvlm read it; wait until whatever "
            "writes it has finished, then retry."
        )
