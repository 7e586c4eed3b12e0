"""One feature-store entry as bytes: a safetensors file with per-site checksums.

An entry holds every stored site of one image (one key) in one namespace. The
bytes are a standard safetensors file (8-byte header length, JSON header, raw
little-endian tensors), so ``safetensors.numpy.load_file`` reads an entry as is;
skvlm reads it itself to fetch only the byte ranges of the sites asked for and to
check each one against its CRC-32 before decoding it.
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
    """An entry file that is truncated, corrupt or misplaced (internal)."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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


def _parse_header(path, head, size, namespace, key):
    if len(head) < 8:
        raise EntryDamaged(path, f"file is {size} bytes, shorter than a header")
    (n,) = struct.unpack_from("<Q", head)
    if n > _MAX_HEADER or 8 + n > size:
        raise EntryDamaged(path, "header length runs past the end of the file")
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
        raise EntryDamaged(path, f"unreadable header ({exc!r})") from None
    if meta.get("format") != FORMAT:
        raise EntryDamaged(path, f"format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("namespace") != namespace or meta.get("key") != key:
        raise EntryDamaged(
            path,
            f"holds namespace {meta.get('namespace')!r} key {meta.get('key')!r}, "
            f"expected {namespace!r} {key!r} (file moved or renamed)",
        )
    expected = max((t[3] for t in table.values()), default=8 + n)
    if size != expected:
        raise EntryDamaged(
            path, f"file is {size} bytes, its header says {expected} (truncated)"
        )
    return table


def _read_index(path, f, size, namespace, key):
    """The bytes read so far and ``{site: (code, shape, start, stop, crc)}``."""
    head = f.read(HEAD_CHUNK)
    if len(head) >= 8:
        (n,) = struct.unpack_from("<Q", head)
        if len(head) < 8 + n <= min(size, 8 + _MAX_HEADER):
            head += f.read(8 + n - len(head))
    table = _parse_header(path, head, size, namespace, key)
    return head, table


def read_entry(path, namespace, key, sites, everything=None, index_cache=None):
    """Read sites of one entry file; ``None`` when the file does not exist.

    Parameters
    ----------
    path : Path
        The entry file.
    namespace, key : str
        What the file must hold (checked against its metadata).
    sites : iterable of str
        The sites wanted; sites the entry lacks are left out of the result.
    everything : callable or None
        Called with the float32 bytes of the whole entry; when it returns True
        every site is read (one read of the file instead of one per site).
    index_cache : _LRU or None
        Keeps each file's parsed header under ``(namespace, key, None)``, valid
        while the file's inode, size and mtime stay the same, so that repeated
        single-site reads of large entries skip the JSON parse.

    Returns
    -------
    dict of str to Encoded, or None
        Each value passed its checksum.

    Raises
    ------
    EntryDamaged
        The file is truncated, corrupt or belongs to another key.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        st = os.fstat(f.fileno())
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = (
            None if index_cache is None else index_cache.get((namespace, key, None))
        )
        head = b""
        if cached is not None and cached[0] == signature:
            table, total = cached[1], cached[2]
        else:
            head, table = _read_index(path, f, st.st_size, namespace, key)
            total = sum(float32_nbytes(t[1]) for t in table.values())
            if index_cache is not None:
                index_cache.put(
                    (namespace, key, None), (signature, table, total), 150 * len(table)
                )
        if everything is not None and everything(total):
            wanted = list(table)
            if st.st_size > len(head):
                f.seek(len(head))
                head += f.read()
        else:
            wanted = [site for site in sites if site in table]
        view = memoryview(head)
        out = {}
        for site in wanted:
            code, shape, start, stop, crc = table[site]
            if stop <= len(view):
                raw = bytes(view[start:stop])
            else:
                f.seek(start)
                raw = f.read(stop - start)
            if (
                code not in _DTYPES
                or len(raw) != _DTYPES[code].itemsize * math.prod(shape)
                or zlib.crc32(raw) != crc
            ):
                raise EntryDamaged(path, f"checksum mismatch in site {site!r}")
            out[site] = Encoded(code, shape, raw, crc)
        return out
