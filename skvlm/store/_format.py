"""One feature-store entry as bytes: safetensors bytes with per-site checksums.

An entry holds sites of one image (one key) in one namespace, as written by one
``write``. Its bytes are a standard safetensors file (8-byte header length, JSON
header, raw little-endian tensors), so ``safetensors.numpy.load`` reads an entry
as is; a disk store keeps many entries one after the other in a pack file
(``_pack.py``). skvlm reads an entry itself, to fetch only the byte ranges of the
sites asked for and to check each one against its CRC-32 before decoding it.
"""

import json
import math
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

FORMAT = "skvlm-feature-store/1"
# Big enough to hold the header and, for small entries (CLIP-sized), all the data,
# so that one read() serves a whole lookup of that entry.
HEAD_CHUNK = 1 << 16
# A header larger than this is garbage, not a store entry.
_MAX_HEADER = 1 << 24
_DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class EntryDamaged(Exception):
    """An entry or pack that is truncated, corrupt or misplaced (internal).

    ``path`` is the file, ``what`` names the part of it ("the entry of key ...
    at byte ..." or "the pack header"), ``reason`` says what is wrong.
    """

    def __init__(self, path, reason, what="the file"):
        super().__init__(f"{path} ({what}): {reason}")
        self.path = path
        self.reason = reason
        self.what = what


class Encoded(NamedTuple):
    """One site's vector of one entry, ready to write."""

    code: str  # safetensors dtype code, "F16" or "F32"
    shape: tuple
    raw: bytes
    crc: int


def encode_rows(array, dtype):
    """Encode each row of a 2-D float array in ``dtype`` ("float16" or "float32").

    A float16 store keeps a row in float32 when float16 would turn one of its
    finite values into inf: a store must never return a different vector.
    """
    array = np.ascontiguousarray(array, dtype=_DTYPES["F32"])
    n, d = array.shape
    fits = np.zeros(n, dtype=bool)
    if dtype == "float16" and d:
        magnitude = np.where(np.isfinite(array), np.abs(array), 0)
        fits = magnitude.max(axis=1) <= _FLOAT16_MAX
        with np.errstate(over="ignore"):  # rows that overflow are kept in float32
            half = array.astype(_DTYPES["F16"])
    rows = []
    for i in range(n):
        code, source = ("F16", half) if fits[i] else ("F32", array)
        raw = source[i].tobytes()
        rows.append(Encoded(code, (d,), raw, zlib.crc32(raw)))
    return rows


def decode(encoded):
    """The float32 vector an :class:`Encoded` stands for (a fresh array)."""
    array = np.frombuffer(encoded.raw, dtype=_DTYPES[encoded.code])
    return array.reshape(encoded.shape).astype(np.float32)


def float32_nbytes(shape):
    """Bytes of a decoded (float32) tensor of ``shape``."""
    return 4 * math.prod(shape)


def to_bytes(namespace, key, tensors):
    """Serialise ``{site: Encoded}`` as one safetensors file."""
    header = {}
    offset = 0
    for site in sorted(tensors):
        t = tensors[site]
        header[site] = {
            "dtype": t.code,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(t.raw)],
        }
        offset += len(t.raw)
    header["__metadata__"] = {
        "format": FORMAT,
        "namespace": namespace,
        "key": key,
        "crc32": json.dumps({s: tensors[s].crc for s in sorted(tensors)}),
    }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # safetensors pads the header with spaces so the data starts 8-byte aligned.
    text += b" " * (-len(text) % 8)
    parts = [struct.pack("<Q", len(text)), text]
    parts.extend(tensors[site].raw for site in sorted(tensors))
    return b"".join(parts)


def _parse_header(where, head, size, namespace, key):
    """``{site: (code, shape, start, stop, crc)}``, offsets within the entry."""
    if len(head) < 8:
        raise EntryDamaged(*where, f"entry is {size} bytes, shorter than a header")
    (n,) = struct.unpack_from("<Q", head)
    if n > _MAX_HEADER or 8 + n > size:
        raise EntryDamaged(*where, "header length runs past the end of the entry")
    try:
        header = json.loads(bytes(head[8 : 8 + n]))
        meta = header.pop("__metadata__")
        crcs = json.loads(meta["crc32"])
        table = {
            site: (
                info["dtype"],
                tuple(int(d) for d in info["shape"]),
                8 + n + int(info["data_offsets"][0]),
                8 + n + int(info["data_offsets"][1]),
                crcs.get(site),
            )
            for site, info in header.items()
        }
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise EntryDamaged(*where, f"unreadable header ({exc!r})") from None
    if meta.get("format") != FORMAT:
        raise EntryDamaged(
            *where, f"format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    if meta.get("namespace") != namespace or meta.get("key") != key:
        raise EntryDamaged(
            *where,
            f"holds namespace {meta.get('namespace')!r} key {meta.get('key')!r}, "
            f"expected {namespace!r} {key!r} (moved or renamed)",
        )
    expected = max((t[3] for t in table.values()), default=8 + n)
    if size != expected:
        raise EntryDamaged(
            *where, f"entry is {size} bytes, its header says {expected} (truncated)"
        )
    return table


def _pread(fd, length, offset):
    """Read ``length`` bytes at ``offset`` (fewer at the end of the file)."""
    parts, got = [], 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_table(fd, path, base, length, namespace, key, index_cache=None, ident=None):
    """``(head bytes, table, float32 bytes of the whole entry)`` of one entry.

    ``head`` holds the entry's first bytes (the whole entry when it is small),
    ``table`` maps each site to ``(code, shape, start, stop, crc)`` relative to
    ``base``. With an ``index_cache`` and an ``ident`` (a tuple naming the
    immutable pack and the offset), the parsed table is memoised there.
    """
    where = (path, f"the entry of key {key!r} at byte {base}")
    cached = None if index_cache is None else index_cache.get(ident)
    if cached is not None:
        return b"", cached[0], cached[1]
    head = _pread(fd, min(length, HEAD_CHUNK), base)
    if len(head) < min(length, HEAD_CHUNK):
        raise EntryDamaged(*where, "the pack ends inside the entry (truncated)")
    if len(head) >= 8:
        (n,) = struct.unpack_from("<Q", head)
        if len(head) < 8 + n <= min(length, 8 + _MAX_HEADER):
            head += _pread(fd, 8 + n - len(head), base + len(head))
    table = _parse_header(where, head, length, namespace, key)
    total = sum(float32_nbytes(t[1]) for t in table.values())
    if index_cache is not None:
        index_cache.put(ident, (table, total), 150 * len(table))
    return head, table, total


def read_entry(
    fd,
    path,
    base,
    length,
    namespace,
    key,
    sites,
    everything=None,
    index_cache=None,
    ident=None,
):
    """Read sites of the entry at ``base`` in an open pack file.

    Parameters
    ----------
    fd : int
        An open file descriptor of the pack (read with ``os.pread``).
    path : Path
        The pack file, for messages.
    base, length : int
        Where the entry lies in the pack.
    namespace, key : str
        What the entry must hold (checked against its metadata).
    sites : iterable of str
        The sites wanted; sites the entry lacks are left out of the result.
    everything : callable or None
        Called with the float32 bytes of the whole entry; when it returns True
        every site is read (one read of the entry instead of one per site).
    index_cache : _LRU or None
        Keeps each entry's parsed header under ``ident``; packs are never
        modified, so the header stays valid while the pack exists.
    ident : hashable or None
        The entry's name in ``index_cache``.

    Returns
    -------
    dict of str to Encoded
        Each value passed its checksum.

    Raises
    ------
    EntryDamaged
        The entry is truncated, corrupt or belongs to another key.
    """
    head, table, total = read_table(
        fd, path, base, length, namespace, key, index_cache, ident
    )
    if everything is not None and everything(total):
        wanted = list(table)
        if length > len(head):
            head += _pread(fd, length - len(head), base + len(head))
    else:
        wanted = [site for site in sites if site in table]
    view = memoryview(head)
    out = {}
    for site in wanted:
        code, shape, start, stop, crc = table[site]
        if stop <= len(view):
            raw = bytes(view[start:stop])
        else:
            raw = _pread(fd, stop - start, base + start)
            if len(raw) < stop - start:
                raise EntryDamaged(
                    path,
                    "the pack ends inside the entry (truncated)",
                    f"the entry of key {key!r} at byte {base}",
                )
        if (
            code not in _DTYPES
            or len(raw) != _DTYPES[code].itemsize * math.prod(shape)
            or zlib.crc32(raw) != crc
        ):
            raise EntryDamaged(
                path,
                f"checksum mismatch in site {site!r}",
                f"the entry of key {key!r} at byte {base}",
            )
        out[site] = Encoded(code, shape, raw, crc)
    return out
