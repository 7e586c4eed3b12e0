"""Where a disk feature store keeps its entries, and how it writes them safely.

Layout (one directory per store)::

    <root>/skvlm-feature-store.json           marks the directory as a store
    <root>/<namespace>/manifest.json          what the namespace was computed with
    <root>/<namespace>/<key[:2]>/<key>.safetensors   every site of one image

One file per (namespace, key) keeps a lookup of a few rows to a few small reads,
lets ``rsync`` copy a store incrementally, and makes a write one ``os.replace``:
the new file is written under a hidden temporary name in the same directory and
renamed over the old one, which POSIX and Windows do atomically, so a reader sees
the old entry or the new one, never a partial one. Writers of one namespace take
an advisory lock (``fcntl.flock``) around their read-merge-replace, so two
processes adding different sites to one key keep both; where locks are not
available the worst case is a lost site, which a later lookup misses and the
caller recomputes. The two-character shard directories keep any one directory
small for stores of millions of images.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from ._errors import FeatureStoreError
from ._format import HEAD_CHUNK, EntryDamaged, read_entry, to_bytes

try:  # POSIX only; elsewhere writers go without the advisory lock.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

MARKER = "skvlm-feature-store.json"
MANIFEST = "manifest.json"
SUFFIX = ".safetensors"
_FORMAT_VERSION = 1
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _write_all(file, data):
    """Write ``data`` to an open binary file (tests replace it to fake a full disk)."""
    file.write(data)


def check_root(root):
    """Refuse a path that is a file, or a non-empty directory that is no store."""
    if root.exists() and not root.is_dir():
        raise FeatureStoreError(
            f"FeatureStore path {str(root)!r} is a file; pass a directory path "
            "(it is created if missing)."
        )
    marker = root / MARKER
    if marker.exists():
        try:
            version = json.loads(marker.read_text())["format_version"]
        except (ValueError, KeyError, OSError) as exc:
            raise FeatureStoreError(
                f"{str(marker)!r} is unreadable ({exc}); delete the directory "
                "or choose another path."
            ) from None
        if version != _FORMAT_VERSION:
            raise FeatureStoreError(
                f"{str(root)!r} holds a feature store of format {version}; this "
                f"skvlm reads format {_FORMAT_VERSION}. Upgrade skvlm or choose "
                "another path."
            )
    elif root.is_dir() and any(root.iterdir()):
        raise FeatureStoreError(
            f"{str(root)!r} is not empty and holds no {MARKER}, so it is not a "
            "skvlm feature store; choose a new or empty directory (a store never "
            "writes into, or clears, a directory it did not create)."
        )


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


def atomic_write(path, data):
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(fd, "wb") as file:
            _write_all(file, data)
        _replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise FeatureStoreError(
                f"No space left to write {len(data)} bytes to {str(path)!r} "
                f"({exc.strerror}). The entry was not stored and the store is "
                "unchanged. Free space on that disk, set max_bytes on the "
                "FeatureStore to stay below the free space, clear() namespaces "
                "you no longer need, or point the cache at a larger disk."
            ) from exc
        raise


class DiskBackend:
    """Entries as files under ``root`` (see the module docstring)."""

    def __init__(self, root, index_cache=None):
        self.root = Path(root)
        self.index_cache = index_cache

    def entry_path(self, namespace, key):
        return self.root / namespace / key[:2] / f"{key}{SUFFIX}"

    def read(self, namespace, key, sites, everything=None):
        return read_entry(
            self.entry_path(namespace, key),
            namespace,
            key,
            sites,
            everything,
            self.index_cache,
        )

    def _ensure_dirs(self, directory):
        if not (self.root / MARKER).exists():
            self.root.mkdir(parents=True, exist_ok=True)
            check_root(self.root)
            atomic_write(
                self.root / MARKER,
                json.dumps({"format_version": _FORMAT_VERSION}).encode(),
            )
        directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self, namespace, lock_name=".lock"):
        self._ensure_dirs(self.root / namespace)
        if fcntl is None:  # pragma: no cover
            yield
            return
        fd = os.open(self.root / namespace / lock_name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with contextlib.suppress(OSError):  # e.g. ENOLCK on some network disks
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def write(self, namespace, items, admit, on_damaged):
        """Merge each ``(key, {site: Encoded})`` into its entry.

        ``admit(nbytes)`` says whether an entry growing by about ``nbytes`` may
        be written (the size guard); ``on_damaged(EntryDamaged)`` reports an old
        entry that could not be merged and is replaced. Returns the keys written.
        """
        written = []
        with self._locked(namespace):
            for key, tensors in items:
                path = self.entry_path(namespace, key)
                try:
                    old = read_entry(path, namespace, key, (), lambda nbytes: True)
                except EntryDamaged as exc:
                    on_damaged(exc)
                    old = None
                if old is not None and set(tensors) <= set(old):
                    written.append(key)  # nothing new: a concurrent writer won
                    continue
                data = to_bytes(namespace, key, {**(old or {}), **tensors})
                old_size = 0 if old is None else _size(path)
                if not admit(len(data) - old_size):
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
                written.append(key)
        return written

    def describe(self, namespace, text):
        path = self.root / namespace / MANIFEST
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return
        self._ensure_dirs(path.parent)
        atomic_write(path, text.encode("utf-8"))

    def _namespaces(self):
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    @staticmethod
    def _entries(ns_dir):
        # A concurrent clear() may remove directories while we walk them.
        with contextlib.suppress(FileNotFoundError):
            for shard in list(os.scandir(ns_dir)):
                if not shard.is_dir():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    for entry in list(os.scandir(shard.path)):
                        if entry.name.endswith(SUFFIX) and entry.name[0] != ".":
                            yield entry

    def total_bytes(self):
        return sum(
            _size(e.path) for ns in self._namespaces() for e in self._entries(ns)
        )

    def scan(self):
        """``{namespace: {entries, bytes, sites, manifest}}`` read from disk."""
        out = {}
        for ns_dir in self._namespaces():
            n = size = 0
            sites = set()
            for entry in self._entries(ns_dir):
                n += 1
                size += _size(entry.path)
                sites.update(_header_sites(entry.path))
            try:
                manifest = json.loads((ns_dir / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = None
            out[ns_dir.name] = {
                "entries": n,
                "bytes": size,
                "sites": sorted(sites),
                "manifest": manifest,
            }
        return out

    def clear(self, namespace=None):
        targets = self._namespaces() if namespace is None else [self.root / namespace]
        for ns_dir in targets:
            # Rename first so that readers and writers see the namespace vanish at
            # once, never half of it.
            doomed = ns_dir.with_name(f".{ns_dir.name}.cleared-{uuid.uuid4().hex}")
            try:
                os.replace(ns_dir, doomed)
            except FileNotFoundError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
        if namespace is None and self.root.is_dir():
            for leftover in self.root.glob(".*.cleared-*"):  # an earlier crash
                shutil.rmtree(leftover, ignore_errors=True)


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _header_sites(path):
    """Site names listed in an entry's header (empty when unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_CHUNK)
        n = int.from_bytes(head[:8], "little")
        header = json.loads(head[8 : 8 + n]) if 8 + n <= len(head) else {}
    except (OSError, ValueError):
        return ()
    return [site for site in header if site != "__metadata__"]
