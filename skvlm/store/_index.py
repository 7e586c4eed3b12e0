"""Where each key's entries lie: the in-memory index of a namespace's packs.

Every pack lists its entries in its header, so the packs alone are the truth;
the index only saves reading every header again. It has two parts:

- the *base*: sorted numpy arrays (a 64-bit digest of each key, and the pack,
  offset and length of its entry), 24 bytes per entry, searched with
  ``np.searchsorted``; it is loaded from, and saved to, the namespace's
  ``packs.index`` snapshot, which any process may rewrite (atomically) when
  many packs are not in it yet;
- the *tail*: a dict for the packs read since, merged into the base when it
  grows.

A digest is only a hint: the entry's own metadata names its key, and a read
checks it, so two keys sharing a digest cost a read, never a wrong vector.
"""

import hashlib
import json
import struct
import zlib

import numpy as np

from ._format import _pread

INDEX_NAME = "packs.index"
INDEX_FORMAT = "skvlm-feature-store-index/1"
_MAGIC = b"SKVLMIX\x01"
_PRELUDE = struct.Struct("<8sII")
_COLUMNS = (("digest", "<u8"), ("pack", "<u4"), ("length", "<u4"), ("offset", "<u8"))
# Merge the tail into the base when it holds this many entries, or a quarter of
# the base, whichever is more: merging costs a sort of the whole base.
_MERGE_AT = 4096


def digest(key):
    """The 64-bit digest of a key, as a Python int."""
    return int.from_bytes(
        hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"
    )


def _empty():
    return {name: np.zeros(0, dtype=dt) for name, dt in _COLUMNS}


class NamespaceIndex:
    """Key -> entry locations of one namespace (see the module docstring)."""

    def __init__(self, namespace):
        self.namespace = namespace
        self.packs = []  # pack number -> file name
        self.numbers = {}  # file name -> pack number
        self.sites = set()
        self.base = _empty()
        self.base_packs = 0  # packs merged into the base (a prefix of .packs)
        self.tail = {}  # digest -> [(pack number, offset, length)]
        self.tail_entries = 0
        self.listed = None  # (inode, mtime_ns) of the packs directory last listed
        self.listed_at = 0.0  # time.time() of that listing

    def __contains__(self, name):
        return name in self.numbers

    def add(self, name, sites, records):
        """Record a pack and its ``(key, offset, length)`` entries."""
        if name in self.numbers:
            return
        number = len(self.packs)
        self.packs.append(name)
        self.numbers[name] = number
        self.sites.update(sites)
        for key, offset, length in records:
            self.tail.setdefault(digest(key), []).append((number, offset, length))
        self.tail_entries += len(records)

    def needs_merge(self):
        return self.tail_entries > max(_MERGE_AT, len(self.base["digest"]) // 4)

    def locations(self, key):
        """``[(pack name, offset, length)]`` of the key's entries, newest first."""
        d = digest(key)
        found = self.tail.get(d, [])
        digests = self.base["digest"]
        if len(digests):
            q = np.uint64(d)
            lo = int(np.searchsorted(digests, q, side="left"))
            hi = (
                lo
                if lo == len(digests) or digests[lo] != q
                else int(np.searchsorted(digests, q, side="right"))
            )
            if hi > lo:
                base = self.base
                found = found + [
                    (
                        int(base["pack"][i]),
                        int(base["offset"][i]),
                        int(base["length"][i]),
                    )
                    for i in range(lo, hi)
                ]
        packs = self.packs
        if len(found) == 1:
            number, offset, length = found[0]
            return [(packs[number], offset, length)]
        # Pack names start with their creation time in hex: newest first.
        ordered = sorted(found, key=lambda loc: packs[loc[0]], reverse=True)
        return [(packs[p], offset, length) for p, offset, length in ordered]

    def n_keys(self):
        keys = np.concatenate(
            [
                self.base["digest"],
                np.fromiter(self.tail, dtype="<u8", count=len(self.tail)),
            ]
        )
        return int(len(np.unique(keys)))

    def merge(self):
        """Move the tail into the base (one sort)."""
        if not self.tail:
            return
        n = self.tail_entries
        new = {name: np.empty(n, dtype=dt) for name, dt in _COLUMNS}
        i = 0
        for d, locations in self.tail.items():
            for number, offset, length in locations:
                new["digest"][i], new["pack"][i] = d, number
                new["offset"][i], new["length"][i] = offset, length
                i += 1
        merged = {k: np.concatenate([self.base[k], new[k]]) for k in self.base}
        order = np.argsort(merged["digest"], kind="stable")
        self.base = {k: v[order] for k, v in merged.items()}
        self.base_packs = len(self.packs)
        self.tail, self.tail_entries = {}, 0

    # -- the snapshot file ------------------------------------------------------
    def to_bytes(self):
        """The snapshot of the base (call :meth:`merge` first)."""
        arrays = b"".join(self.base[name].tobytes() for name, _ in _COLUMNS)
        header = json.dumps(
            {
                "format": INDEX_FORMAT,
                "namespace": self.namespace,
                "packs": self.packs[: self.base_packs],
                "sites": sorted(self.sites),
                "n": len(self.base["digest"]),
                "data_crc32": zlib.crc32(arrays),
            },
            separators=(",", ":"),
        ).encode()
        header += b" " * (-(len(header) + _PRELUDE.size) % 8)
        return _PRELUDE.pack(_MAGIC, len(header), zlib.crc32(header)) + header + arrays

    def load(self, fd, size):
        """Replace the base with a snapshot file's; False if it is unusable.

        A damaged or foreign snapshot is ignored (the packs are the truth: their
        headers are read instead).
        """
        prelude = _pread(fd, _PRELUDE.size, 0)
        if len(prelude) < _PRELUDE.size:
            return False
        magic, n, crc = _PRELUDE.unpack(prelude)
        if magic != _MAGIC or _PRELUDE.size + n > size:
            return False
        header = _pread(fd, n, _PRELUDE.size)
        if zlib.crc32(header) != crc:
            return False
        try:
            body = json.loads(header)
            if body["format"] != INDEX_FORMAT or body["namespace"] != self.namespace:
                return False
            packs, count = [str(p) for p in body["packs"]], int(body["n"])
            sites, data_crc = body["sites"], int(body["data_crc32"])
        except (ValueError, KeyError, TypeError):
            return False
        width = sum(np.dtype(dt).itemsize for _, dt in _COLUMNS)
        data = _pread(fd, width * count, _PRELUDE.size + n)
        if len(data) != width * count or zlib.crc32(data) != data_crc:
            return False
        base, at = {}, 0
        for name, dt in _COLUMNS:
            nbytes = np.dtype(dt).itemsize * count
            base[name] = np.frombuffer(data, dtype=dt, count=count, offset=at)
            at += nbytes
        if count and int(base["pack"].max()) >= len(packs):
            return False
        self.__init__(self.namespace)
        self.packs = packs
        self.numbers = {name: i for i, name in enumerate(packs)}
        self.sites = set(sites)
        self.base = base
        self.base_packs = len(packs)
        return True
