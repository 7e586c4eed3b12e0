"""What a feature store keeps in memory: the LRU and the memory backend."""

import json
import threading
from collections import OrderedDict

_CACHE_ITEM_OVERHEAD = 100  # bytes of dict slot, tuple key and array header


class _LRU:
    """Values by ``(namespace, key, site)``, at most ``max_bytes`` in all.

    Holds decoded vectors and, under ``site=None``, the parsed index of an entry
    file, so that both count against one bound.
    """

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.items = OrderedDict()  # item -> (value, size)
        self._lock = threading.Lock()

    def get(self, item):
        with self._lock:
            entry = self.items.get(item)
            if entry is None:
                return None
            self.items.move_to_end(item)
            return entry[0]

    def put(self, item, value, nbytes):
        size = nbytes + _CACHE_ITEM_OVERHEAD
        if size > self.max_bytes:
            return
        with self._lock:
            old = self.items.pop(item, None)
            if old is not None:
                self.nbytes -= old[1]
            self.items[item] = (value, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                self.nbytes -= self.items.popitem(last=False)[1][1]

    def drop(self, namespace=None):
        with self._lock:
            for item in [i for i in self.items if namespace in (None, i[0])]:
                self.nbytes -= self.items.pop(item)[1]

    def stats(self):
        """Number of decoded vectors and bytes held (file indexes included)."""
        with self._lock:
            n = sum(1 for item in self.items if item[2] is not None)
            return {"entries": n, "bytes": self.nbytes, "max_bytes": self.max_bytes}


class _MemoryBackend:
    """Entries in a dict; the storage of a store made with ``path=None``."""

    def __init__(self, entries=None, manifests=None):
        self.entries = entries if entries is not None else {}
        self.manifests = manifests if manifests is not None else {}

    def read(self, namespace, key, sites, everything=None):  # noqa: ARG002
        entry = self.entries.get(namespace, {}).get(key)
        if entry is None:
            return None
        return {site: entry[site] for site in sites if site in entry}

    def write(self, namespace, items, admit, on_damaged):
        entries = self.entries.setdefault(namespace, {})
        written = []
        for key, tensors in items:
            old = entries.get(key, {})
            if set(tensors) <= set(old) or admit(
                sum(len(t.raw) for t in tensors.values())
            ):
                if not set(tensors) <= set(old):
                    entries[key] = {**old, **tensors}
                written.append(key)
        return written

    def describe(self, namespace, text):
        self.manifests[namespace] = text

    def total_bytes(self):
        return sum(
            len(t.raw)
            for ns in self.entries.values()
            for e in ns.values()
            for t in e.values()
        )

    def scan(self):
        out = {}
        for namespace in sorted(set(self.entries) | set(self.manifests)):
            entries = self.entries.get(namespace, {})
            text = self.manifests.get(namespace)
            out[namespace] = {
                "entries": len(entries),
                "bytes": sum(len(t.raw) for e in entries.values() for t in e.values()),
                "sites": sorted({site for e in entries.values() for site in e}),
                "manifest": None if text is None else json.loads(text),
            }
        return out

    def clear(self, namespace=None):
        for mapping in (self.entries, self.manifests):
            if namespace is None:
                mapping.clear()
            else:
                mapping.pop(namespace, None)
