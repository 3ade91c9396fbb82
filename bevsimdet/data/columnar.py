"""A single-file container of named numpy arrays that is read by memory-mapping, never parsed.

Layout (all integers little-endian)::

    8 bytes   magic b"BSDCOL01"
    8 bytes   u64 length L of the JSON header
    L bytes   JSON header {"meta": {...}, "arrays": {name: {"dtype", "shape", "offset"}}}
    padding   to a multiple of ALIGN
    data      every array's raw C-order bytes at ``data start + offset`` (offsets multiples of ALIGN)

Why not ``np.savez``: members of a zip cannot be memory-mapped by numpy, so every process would
read (copy) every array. Why not a folder of ``.npy`` files: one file is written atomically by
one rename, and one mapping serves all arrays. Only plain numeric dtypes are allowed, so nothing
in a file can carry code (no pickle, no object arrays).

Arrays are read-only views of one ``MAP_SHARED`` mapping: processes that map the same file (loader
workers, ranks on one machine) share its page-cache pages instead of each holding a copy, and only
the pages a process touches are ever read.
"""

from __future__ import annotations

import codecs
import json
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

MAGIC = b"BSDCOL01"
ALIGN = 64
MAX_HEADER = 1 << 24  # bytes: a header longer than this is corrupt, not big
DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1"})
_PREFIX = struct.Struct("<8sQ")


class ColumnFormatError(ValueError):
    """A file that is not a well-formed column file; callers turn it into a one-line DataError."""


def _pad(n: int) -> int:
    return -n % ALIGN


def write_columns(path: str | Path, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (name -> array of a dtype in :data:`DTYPES`) and the JSON-able ``meta``
    atomically to ``path``."""
    from bevsimdet.io import atomic_path

    entries, offset, ready = {}, 0, {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.str not in DTYPES:
            raise TypeError(f"column {name}: dtype {a.dtype.str} is not one of {sorted(DTYPES)}")
        entries[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        ready[name] = a
        offset += a.nbytes + _pad(a.nbytes)
    header = json.dumps({"meta": dict(meta), "arrays": entries}, separators=(",", ":")).encode("utf-8")
    head = _PREFIX.pack(MAGIC, len(header)) + header
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(head + b"\0" * _pad(len(head)))
        for a in ready.values():
            f.write(memoryview(a).cast("B") if a.nbytes else b"")
            f.write(b"\0" * _pad(a.nbytes))


def is_column_file(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def read_columns(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, {name: read-only array}) of a file written by :func:`write_columns`.

    Only the header is read; the arrays are views of a shared memory map. Raises
    :class:`ColumnFormatError` for anything malformed (bad magic, header, dtype, or an array
    that runs past the end of the file).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
            raise ColumnFormatError("not a column file (bad magic)")
        (length,) = struct.unpack("<Q", prefix[8:])
        if length > min(MAX_HEADER, size - _PREFIX.size):
            raise ColumnFormatError(f"header length {length} runs past the end of the file (truncated?)")
        try:
            doc = json.loads(f.read(length))
        except (ValueError, RecursionError):
            raise ColumnFormatError("header is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict) or not isinstance(doc.get("arrays"), dict):
        raise ColumnFormatError("header lacks 'meta' or 'arrays'")
    start = _PREFIX.size + length
    start += _pad(start)
    buf = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    arrays = {}
    for name, e in doc["arrays"].items():
        if not isinstance(e, dict):
            raise ColumnFormatError(f"array {name!r}: entry is not an object")
        dtype, shape, offset = e.get("dtype"), e.get("shape"), e.get("offset")
        if dtype not in DTYPES:
            raise ColumnFormatError(f"array {name!r}: dtype {dtype!r} is not allowed")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ColumnFormatError(f"array {name!r}: bad shape {shape!r}")
        if type(offset) is not int or offset < 0 or offset % ALIGN:
            raise ColumnFormatError(f"array {name!r}: bad offset {offset!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if start + offset + nbytes > size:
            raise ColumnFormatError(f"array {name!r} runs past the end of the file (truncated?)")
        # np.asarray drops the memmap subclass (no copy): plain read-only ndarrays from here on
        arrays[name] = np.asarray(buf[start + offset : start + offset + nbytes]).view(dtype).reshape(shape)
    return doc["meta"], arrays


# --------------------------------------------------------------------------------------------
# strings: one byte buffer + offsets


def encode_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 bytes, int64 offsets of length len(strings) + 1) of UTF-8 ``strings``."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


class StringColumn(Sequence[str]):
    """Read-only strings decoded on access from a byte buffer and offsets (as from
    :func:`encode_strings`); nothing is decoded up front."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")

    def slice(self, lo: int, hi: int) -> list[str]:
        """Strings ``lo .. hi - 1``, with one bytes conversion for all of them."""
        o = self.offsets[lo : hi + 1]
        raw = self.data[o[0] : o[-1]].tobytes() if hi > lo else b""
        base = int(o[0]) if hi > lo else 0
        return [raw[a - base : b - base].decode("utf-8") for a, b in zip(o[:-1].tolist(), o[1:].tolist())]

    def all(self) -> list[str]:
        return self.slice(0, len(self))

    def check(self) -> str | None:
        """The problem of malformed offsets (not from 0 to the buffer's end, or decreasing), else
        None. O(number of strings); the bytes are checked by :meth:`check_utf8`."""
        o = self.offsets
        if o.ndim != 1 or len(o) < 1 or o[0] != 0 or o[-1] != len(self.data) or (np.diff(o) < 0).any():
            return "has offsets that do not cover its bytes in order"
        return None

    def check_utf8(self) -> str | None:
        """"is not UTF-8" when the bytes do not decode, else None (reads every byte)."""
        # incrementally, so that checking a large column never holds a decoded copy of it
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for lo in range(0, len(self.data), 1 << 22):
                decoder.decode(self.data[lo : lo + (1 << 22)].tobytes())
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "is not UTF-8"
        return None
