"""Where a disk feature store keeps its entries, and how it finds them.

Layout (one directory per store)::

    <root>/skvlm-feature-store.json        marks the directory as a store (format 2)
    <root>/<namespace>/manifest.json       what the namespace was computed with
    <root>/<namespace>/packs/<time>-<id>.pack   the entries of one write (_pack.py)
    <root>/<namespace>/packs.index         a snapshot of the key index (_index.py)

Every file is written atomically (``_files.py``) and a pack is never modified
afterwards. Writers need no lock to keep each other's work: adding sites to an
image appends a new pack, so concurrent processes (or machines on a shared file
system) never overwrite each other.
"""

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from ._errors import FeatureStoreError
from ._files import (
    READ_ONLY,
    ReadOnly,
    atomic_write,
    is_temporary,
    lock,
    remove_orphans,
)
from ._format import EntryDamaged, read_entry, read_table
from ._index import INDEX_NAME, NamespaceIndex
from ._pack import PACK_SUFFIX, pack_parts, read_pack_header

try:  # POSIX only; elsewhere writers go without the advisory lock.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

MARKER = "skvlm-feature-store.json"
MANIFEST = "manifest.json"
PACKS = "packs"
FORMAT_VERSION = 2
# A directory listing is trusted while the directory's mtime is unchanged and
# older than this (file systems stamp mtimes coarsely; git does the same).
_RACY_SECONDS = 2.0
_MAX_OPEN = 256
# A refresh that read this many pack headers saves an index snapshot.
_SNAPSHOT_AFTER = 256


def check_root(root):
    """Refuse a path that is a file, a foreign directory or another format."""
    if root.exists() and not root.is_dir():
        raise FeatureStoreError(
            f"FeatureStore path {str(root)!r} is a file; pass a directory path "
            "(it is created if missing)."
        )
    marker = root / MARKER
    if marker.exists():
        try:
            version = json.loads(marker.read_text())["format_version"]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise FeatureStoreError(
                f"{str(marker)!r} is unreadable ({exc}); delete the directory "
                "or choose another path."
            ) from None
        if version == 1:
            raise FeatureStoreError(
                f"{str(root)!r} holds a feature store of format 1 (one file per "
                "image, written by an older skvlm); this skvlm reads format 2 "
                "(packs of many images). A store only holds recomputable "
                "features: delete that directory (its features are computed "
                "again on first use) or choose another path."
            )
        if version != FORMAT_VERSION:
            raise FeatureStoreError(
                f"{str(root)!r} holds a feature store of format {version}; this "
                f"skvlm reads format {FORMAT_VERSION}. Upgrade skvlm or choose "
                "another path."
            )
    elif root.is_dir() and any(not is_temporary(p.name) for p in root.iterdir()):
        # A store being created by another process holds only its temporary
        # marker file for a moment: that is not a foreign directory.
        raise FeatureStoreError(
            f"{str(root)!r} is not empty and holds no {MARKER}, so it is not a "
            "skvlm feature store; choose a new or empty directory (a store never "
            "writes into, or clears, a directory it did not create)."
        )


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class DiskBackend:
    """Entries in pack files under ``root`` (see the module docstring)."""

    def __init__(self, root, index_cache=None):
        self.root = Path(root)
        self.index_cache = index_cache
        self._indexes = {}  # namespace -> NamespaceIndex
        self._lock = threading.RLock()  # guards the indexes and the open files
        self._files = OrderedDict()  # pack path -> fd, least recently used first
        self._cleaned = set()  # directories whose orphans this object removed
        self._checked = {}  # directory -> (inode, mtime_ns) of its last check
        # Entries found damaged: skipped from then on, so that their sites count
        # as missing (a header-only check cannot see damaged data).
        self._damaged = set()

    # -- reading ----------------------------------------------------------------
    def _open(self, path):
        """A cached read-only descriptor of a pack; None when it is gone."""
        with self._lock:
            fd = self._files.get(path)
            if fd is not None:
                self._files.move_to_end(path)
                return fd
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except (FileNotFoundError, NotADirectoryError):
                return None
            except IsADirectoryError:
                raise self._not_a_file(path) from None
            self._files[path] = fd
            while len(self._files) > _MAX_OPEN:
                os.close(self._files.popitem(last=False)[1])
            return fd

    def close(self):
        with self._lock:
            while self._files:
                os.close(self._files.popitem()[1])

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    @staticmethod
    def _not_a_file(path):
        return FeatureStoreError(
            f"{str(path)!r} is a directory where the feature store keeps a pack "
            "file: something else wrote into the store. Remove it (the store "
            "never creates directories there)."
        )

    def _entries(self, namespace, key):
        """``[(fd, path, offset, length, ident)]`` of a key's entries, newest first."""
        with self._lock:
            index = self._indexes.get(namespace) or self._index(namespace)
            locations = index.locations(key)
        out = []
        for name, offset, length in locations:
            ident = (namespace, (name, offset), None)
            if ident in self._damaged:
                continue
            path = os.path.join(self.root, namespace, PACKS, name)
            fd = self._open(path)
            if fd is None:  # cleared or deleted since it was indexed
                self._forget(namespace)
                continue
            out.append((fd, path, offset, length, ident))
        return out

    def read(self, namespace, key, sites, everything=None, on_damaged=None):
        """``{site: Encoded}`` of the key's entries (None when it has none).

        Damaged entries are passed to ``on_damaged`` and skipped; a newer entry
        that holds the same site wins.
        """
        with self._lock:  # no descriptor is closed (LRU, clear) while it is read
            return self._read(namespace, key, sites, everything, on_damaged)

    def _read(self, namespace, key, sites, everything, on_damaged):
        found, want, any_entry = {}, set(sites), False
        for fd, path, offset, length, ident in self._entries(namespace, key):
            any_entry = True
            try:
                got = read_entry(
                    fd,
                    path,
                    offset,
                    length,
                    namespace,
                    key,
                    [s for s in sites if s not in found],
                    everything,
                    self.index_cache,
                    ident,
                )
            except EntryDamaged as exc:
                self._damaged.add(ident)
                on_damaged(exc)
                continue
            for site, value in got.items():
                found.setdefault(site, value)
            if want <= found.keys():
                break
        return found if any_entry else None

    def sites_of(self, namespace, key, wanted, on_damaged):
        """The sites of ``wanted`` the key's entries hold (headers only)."""
        with self._lock:  # no descriptor is closed (LRU, clear) while it is read
            return self._sites_of(namespace, key, set(wanted), on_damaged)

    def _sites_of(self, namespace, key, wanted, on_damaged):
        found = set()
        for fd, path, offset, length, ident in self._entries(namespace, key):
            try:
                _, table, _ = read_table(
                    fd, path, offset, length, namespace, key, self.index_cache, ident
                )
            except EntryDamaged as exc:
                self._damaged.add(ident)
                on_damaged(exc)
                continue
            found.update(wanted.intersection(table))
            if found == wanted:
                break
        return found

    # -- the index --------------------------------------------------------------
    def _index(self, namespace):
        with self._lock:
            index = self._indexes.get(namespace)
            if index is None:
                index = self._indexes[namespace] = NamespaceIndex(namespace)
                path = self.root / namespace / INDEX_NAME
                with contextlib.suppress(OSError):
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    try:
                        index.load(fd, os.fstat(fd).st_size)
                    finally:
                        os.close(fd)
            return index

    def _forget(self, namespace):
        """Drop what this object knows of a namespace (it was cleared)."""
        with self._lock:
            self._indexes.pop(namespace, None)
            self._damaged = {i for i in self._damaged if i[0] != namespace}
            packs = os.path.join(self.root, namespace, PACKS)
            for path in [p for p in self._files if p.startswith(packs)]:
                os.close(self._files.pop(path))

    def refresh(self, namespace, on_damaged, force=False):
        """Read the headers of the packs other writers added since the last look.

        Cheap when nothing changed: one ``stat`` of the packs directory, unless
        ``force`` (the caller waited for another writer and must see its work).
        Returns True when packs were added to the index.
        """
        packs = self.root / namespace / PACKS
        with self._lock:
            index = self._index(namespace)
            try:
                st = os.stat(packs)
            except (FileNotFoundError, NotADirectoryError):
                if index.packs:
                    self._forget(namespace)
                return False
            stamp = (st.st_ino, st.st_mtime_ns)
            racy = index.listed_at - st.st_mtime_ns / 1e9 < _RACY_SECONDS
            if not force and index.listed == stamp and not racy:
                return False
            if index.listed is not None and index.listed[0] != st.st_ino:
                self._forget(namespace)  # cleared and created again
                index = self._index(namespace)
            listed_at = time.time()
            new = []
            for entry in os.scandir(packs):
                name = entry.name
                if not name.endswith(PACK_SUFFIX) or name.startswith("."):
                    continue
                if name in index:
                    continue
                if entry.is_dir():
                    raise self._not_a_file(packs / name)
                new.append(name)
            known = len(index.packs)
            for name in sorted(new):
                self._read_pack(index, packs / name, on_damaged)
            index.listed, index.listed_at = stamp, listed_at
            # Save a snapshot when this look read many headers, so that the next
            # process opening the store reads one file instead.
            if index.needs_merge() or len(index.packs) - known >= _SNAPSHOT_AFTER:
                index.merge()
                self._save_index(namespace, index)
            if namespace not in self._cleaned:
                self._cleaned.add(namespace)
                remove_orphans(packs)
                remove_orphans(packs.parent)
            return len(index.packs) > known

    def prepare(self, namespace, on_damaged):
        """List the namespace's packs once, before this object first reads it."""
        index = self._indexes.get(namespace)
        if index is None or index.listed is None:
            self.refresh(namespace, on_damaged)

    def _check_cleared(self, namespace):
        """Forget the index of a namespace another process cleared."""
        with self._lock:
            index = self._indexes.get(namespace)
            if index is None or index.listed is None:
                return
            try:
                inode = os.stat(self.root / namespace / PACKS).st_ino
            except (FileNotFoundError, NotADirectoryError):
                inode = None
            if inode != index.listed[0]:
                self._forget(namespace)

    def _read_pack(self, index, path, on_damaged):
        fd = self._open(str(path))
        if fd is None:
            return
        try:
            sites, records = read_pack_header(
                fd, path, os.fstat(fd).st_size, index.namespace
            )
        except EntryDamaged as exc:
            on_damaged(exc)
            self._quarantine(path)
            return
        index.add(path.name, sites, records)

    def _quarantine(self, path):
        """Move a pack whose header is damaged out of the way (kept, hidden)."""
        with self._lock:
            fd = self._files.pop(str(path), None)
            if fd is not None:
                os.close(fd)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(f".{path.name}.damaged"))

    def _save_index(self, namespace, index):
        with contextlib.suppress(ReadOnly, FeatureStoreError, OSError):
            atomic_write(self.root / namespace / INDEX_NAME, index.to_bytes())

    # -- writing ----------------------------------------------------------------
    def _ensure_dirs(self, directory):
        try:
            if not (self.root / MARKER).exists():
                self.root.mkdir(parents=True, exist_ok=True)
                check_root(self.root)
                atomic_write(
                    self.root / MARKER,
                    json.dumps({"format_version": FORMAT_VERSION}).encode(),
                )
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno in READ_ONLY:
                raise ReadOnly(directory, exc) from exc
            raise

    @contextlib.contextmanager
    def locked(self, namespace, lock_name=".compute.lock"):
        """Hold an advisory lock file of the namespace (``ReadOnly`` if impossible)."""
        directory = self.root / namespace
        self._ensure_dirs(directory)
        if fcntl is None:  # pragma: no cover
            yield
            return
        path = directory / lock_name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in READ_ONLY:
                raise ReadOnly(path, exc) from exc
            raise
        try:
            lock(fd)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def write(self, namespace, items, admit, on_damaged):
        """Store each ``(key, {site: Encoded})`` as a new entry in one new pack.

        Sites the key already holds are left out; ``admit(nbytes)`` says whether
        an entry of ``nbytes`` may be written (the size guard). Returns the
        keys that hold their sites afterwards.
        """
        from ._format import to_bytes

        packs = self.root / namespace / PACKS
        self._check_cleared(namespace)
        self.prepare(namespace, on_damaged)
        written, entries, sites = [], [], set()
        for key, tensors in items:
            held = self.sites_of(namespace, key, tensors, on_damaged)
            new = {site: t for site, t in tensors.items() if site not in held}
            if not new:
                written.append(key)  # nothing new: an earlier writer stored it
                continue
            data = to_bytes(namespace, key, new)
            if admit(len(data)):
                entries.append((key, data))
                sites.update(new)
        if not entries:
            return written
        self._ensure_dirs(packs)
        parts, records = pack_parts(namespace, entries)
        name = f"{time.time_ns():016x}-{uuid.uuid4().hex[:16]}{PACK_SUFFIX}"
        atomic_write(packs / name, parts)
        with self._lock:
            index = self._index(namespace)
            index.add(name, sites, records)
            if index.needs_merge():
                index.merge()
                self._save_index(namespace, index)
        return written + [key for key, _ in entries]

    def describe(self, namespace, text):
        path = self.root / namespace / MANIFEST
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return
        self._ensure_dirs(path.parent)
        atomic_write(path, text.encode("utf-8"))

    # -- the whole store --------------------------------------------------------
    def _namespaces(self):
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def _pack_files(self, namespace):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(self.root / namespace / PACKS):
                if entry.name.endswith(PACK_SUFFIX) and entry.name[0] != ".":
                    yield entry

    def total_bytes(self):
        return sum(
            _size(e.path)
            for ns in self._namespaces()
            for e in self._pack_files(ns.name)
        )

    def scan(self, on_damaged):
        """``{namespace: {entries, bytes, sites, manifest}}`` read from disk."""
        out = {}
        for ns_dir in self._namespaces():
            namespace = ns_dir.name
            self.refresh(namespace, on_damaged, force=True)
            with self._lock:
                index = self._index(namespace)
                n, sites = index.n_keys(), sorted(index.sites)
            try:
                manifest = json.loads((ns_dir / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = None
            out[namespace] = {
                "entries": n,
                "bytes": sum(_size(e.path) for e in self._pack_files(namespace)),
                "files": sum(1 for _ in self._pack_files(namespace)),
                "sites": sites,
                "manifest": manifest,
            }
        return out

    def check(self):
        """Raise ``FeatureStoreError`` where the directory is not a usable store.

        Checks the root (a file, a foreign directory, another format) and that
        every namespace and packs path is a directory and every pack a file.
        Each directory is listed again only when its mtime changed.
        """
        check_root(self.root)
        for ns_dir in self._namespaces():
            packs = ns_dir / PACKS
            try:
                st = os.stat(packs)
            except FileNotFoundError:
                continue
            if not os.path.isdir(packs):
                raise FeatureStoreError(
                    f"{str(packs)!r} is a file where the feature store keeps a "
                    "directory of packs: something else wrote into the store. "
                    "Remove it."
                )
            stamp = (st.st_ino, st.st_mtime_ns)
            if self._checked.get(packs) == stamp:
                continue
            for entry in os.scandir(packs):
                if entry.name.endswith(PACK_SUFFIX) and entry.is_dir():
                    raise self._not_a_file(packs / entry.name)
            self._checked[packs] = stamp

    def clear(self, namespace=None):
        targets = self._namespaces() if namespace is None else [self.root / namespace]
        for ns_dir in targets:
            self._forget(ns_dir.name)
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
            remove_orphans(self.root)
