"""Pack files: many entries of one namespace in one immutable file.

A ``write`` of a batch of images becomes one pack, written under a hidden
temporary name and renamed into place, so readers see all of it or nothing::

    bytes 0-7     b"SKVLMPK" + format byte
    bytes 8-11    header length H (little-endian uint32)
    bytes 12-15   CRC-32 of the header
    bytes 16-     header, UTF-8 JSON padded with spaces to a multiple of 8:
                  {"format", "namespace", "sites": [every site in the pack],
                   "entries": [[key, offset, length], ...]}
    then          the entries at their (8-byte aligned) offsets, each a
                  safetensors byte string holding its namespace, key and a
                  CRC-32 per site (``_format.py``)

A pack is never modified after it is renamed into place; merging new sites into
an image appends a new pack with an entry holding only those sites, and a
lookup reads an image's entries newest first.
"""

import json
import struct
import zlib

from ._format import EntryDamaged, _pread

PACK_FORMAT = "skvlm-feature-store-pack/1"
PACK_SUFFIX = ".pack"
_MAGIC = b"SKVLMPK\x01"
_PRELUDE = struct.Struct("<8sII")
_MAX_HEADER = 1 << 28


def pack_parts(namespace, entries):
    """The bytes of a pack as a list of parts, and its index records.

    Parameters
    ----------
    namespace : str
    entries : list of (str, bytes)
        ``(key, entry bytes)``, one per image.

    Returns
    -------
    parts : list of bytes
        Write them one after the other.
    records : list of (str, int, int)
        ``(key, offset, length)`` of each entry.
    """
    sites = set()
    for _, data in entries:
        sites.update(_entry_sites(data))
    lengths = [len(data) for _, data in entries]
    # The header's size depends on the offsets it lists: size it with the
    # offsets' widest spelling first, then pad the real header to that size.
    probe = _header(namespace, sites, entries, [10**15] * len(entries), lengths)
    size = len(probe) + (-len(probe) % 8)
    offsets, at = [], _PRELUDE.size + size
    for length in lengths:
        offsets.append(at)
        at += length + (-length % 8)
    header = _header(namespace, sites, entries, offsets, lengths)
    header += b" " * (size - len(header))
    parts = [_PRELUDE.pack(_MAGIC, len(header), zlib.crc32(header)), header]
    for (_, data), length in zip(entries, lengths, strict=True):
        parts.append(data)
        if length % 8:
            parts.append(b"\0" * (-length % 8))
    records = [
        (key, offset, length)
        for (key, _), offset, length in zip(entries, offsets, lengths, strict=True)
    ]
    return parts, records


def _header(namespace, sites, entries, offsets, lengths):
    body = {
        "format": PACK_FORMAT,
        "namespace": namespace,
        "sites": sorted(sites),
        "entries": [
            [key, offset, length]
            for (key, _), offset, length in zip(entries, offsets, lengths, strict=True)
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _entry_sites(data):
    (n,) = struct.unpack_from("<Q", data)
    return [s for s in json.loads(data[8 : 8 + n]) if s != "__metadata__"]


def read_pack_header(fd, path, size, namespace):
    """``(sites, [(key, offset, length), ...])`` listed by a pack's header.

    Raises
    ------
    EntryDamaged
        The header is truncated, corrupt, of another format or namespace, or
        lists an entry past the end of the file.
    """
    what = "the pack header"
    prelude = _pread(fd, _PRELUDE.size, 0)
    if len(prelude) < _PRELUDE.size:
        raise EntryDamaged(path, f"file is {size} bytes, shorter than a header", what)
    magic, n, crc = _PRELUDE.unpack(prelude)
    if magic != _MAGIC:
        raise EntryDamaged(path, f"not a skvlm pack (starts with {magic!r})", what)
    if n > _MAX_HEADER or _PRELUDE.size + n > size:
        raise EntryDamaged(path, "header length runs past the end of the file", what)
    header = _pread(fd, n, _PRELUDE.size)
    if zlib.crc32(header) != crc:
        raise EntryDamaged(path, "checksum mismatch in the header", what)
    try:
        body = json.loads(header)
        entries = [(str(k), int(o), int(n_)) for k, o, n_ in body["entries"]]
        sites = [str(s) for s in body["sites"]]
        fmt, space = body["format"], body["namespace"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EntryDamaged(path, f"unreadable header ({exc!r})", what) from None
    if fmt != PACK_FORMAT:
        raise EntryDamaged(path, f"format {fmt!r}, expected {PACK_FORMAT!r}", what)
    if space != namespace:
        raise EntryDamaged(
            path, f"holds namespace {space!r}, expected {namespace!r} (moved)", what
        )
    # A truncated pack keeps its header: the entries it cut are reported when
    # read, the others stay good.
    return sites, entries
