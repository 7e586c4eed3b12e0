"""Writing a store's files safely: atomically, under a lock, and cleaning up after crashes.

Every file of a store is written under a hidden temporary name in its directory
and renamed into place (``os.replace``, atomic on POSIX and Windows), so a reader
sees a whole file or none, whatever happens to the writer. The writer holds an
advisory lock (``fcntl.flock``) on its temporary file while it writes it, so a
later run can tell the leftovers of a killed writer (removed) from a live
writer's file (left alone).
"""

import contextlib
import errno
import os
import tempfile
import time

from ._errors import FeatureStoreError

try:  # POSIX only; elsewhere writers go without the advisory lock.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}
# A temporary file is an orphan when no process holds its lock and it is older
# than this (a writer takes the lock right after creating the file).
ORPHAN_AGE = 60.0
# Without flock (Windows), only temporary files this old are removed.
_ORPHAN_AGE_UNLOCKED = 24 * 3600.0


class ReadOnly(Exception):
    """The store's directory cannot be written (internal)."""

    def __init__(self, path, error):
        super().__init__(f"{path}: {error}")
        self.path = path
        self.error = error


def _write_all(file, data):
    """Write ``data`` to an open binary file (tests replace it to fake a full disk)."""
    file.write(data)


def is_temporary(name):
    """Whether a file name is one of the store's temporary files."""
    return name.startswith(".") and name.endswith(".tmp")


def _replace(tmp, path, attempts=5):
    # On Windows a file another process has open cannot be replaced for a moment.
    for attempt in range(attempts):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


def lock(fd, blocking=True):
    """Take an exclusive advisory lock; True when held (or locks are unavailable)."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK on some network disks: go without
        return True
    return True


def atomic_write(path, parts):
    """Write ``parts`` (bytes) to ``path`` through a locked temporary file.

    Raises ``FeatureStoreError`` on a full disk (the store is unchanged) and
    :class:`ReadOnly` when the directory cannot be written.
    """
    if isinstance(parts, bytes):
        parts = [parts]
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(fd, "wb") as file:
            lock(file.fileno())  # held until closed: marks the file as live
            for part in parts:
                _write_all(file, part)
            file.flush()
            _replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            size = sum(len(p) for p in parts)
            raise FeatureStoreError(
                f"No space left to write {size} bytes to {str(path)!r} "
                f"({exc.strerror}). Nothing of this write was stored and the "
                "store is unchanged. Free space on that disk, set max_bytes on "
                "the FeatureStore to stay below the free space, clear() "
                "namespaces you no longer need, or point the cache at a larger "
                "disk."
            ) from exc
        if isinstance(exc, OSError) and exc.errno in READ_ONLY:
            raise ReadOnly(path.parent, exc) from exc
        raise


def remove_orphans(directory, now=None):
    """Delete temporary files no live writer holds; return how many.

    A file is removed only when it is older than :data:`ORPHAN_AGE` and its
    advisory lock can be taken at once (its writer died, even by ``kill -9``:
    the system releases the locks of a dead process). Without ``fcntl`` only
    files older than a day go.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        names = [e.name for e in os.scandir(directory) if is_temporary(e.name)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            age = now - os.fstat(fd).st_mtime
            if fcntl is None:  # pragma: no cover
                orphan = age > _ORPHAN_AGE_UNLOCKED
            else:
                orphan = age > ORPHAN_AGE and lock(fd, blocking=False)
            if orphan:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed += 1
        finally:
            os.close(fd)
    return removed
