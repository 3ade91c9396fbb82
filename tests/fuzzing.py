"""Seeded mutation fuzzing of file readers (a helper of the hardening tests, not a test module).

:func:`mutants` turns one valid JSON document into many corrupt ones: byte-level damage
(truncation, flipped bytes, garbage, deep nesting) and structural damage (a key deleted, a value
replaced by one of the wrong type or a non-finite number). :func:`check_reader` runs a reader on
each and demands that it either accepts the file or raises a :class:`~bevsimdet.errors.UserError`
with a one-line message; anything else (another exception type, a multi-line message) fails.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any, Callable, Iterator

from bevsimdet.errors import UserError

WRONG_VALUES: tuple[Any, ...] = (None, "x", -1, 0, 1e308, True, [], {}, [[1, 2], [3]], float("nan"), float("inf"), "NaN")


def paths_of(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path in a JSON tree (the root excluded)."""
    out = []
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return out
    for k, v in items:
        out.append((*prefix, k))
        out.extend(paths_of(v, (*prefix, k)))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for k in path[:-1]:
        doc = doc[k]
    return doc


def structural_mutants(doc: Any, rng: random.Random, count: int) -> Iterator[tuple[str, Any]]:
    """``count`` copies of ``doc``, each with one path deleted or set to a wrong value."""
    paths = paths_of(doc)
    for _ in range(count):
        path = rng.choice(paths)
        out = copy.deepcopy(doc)
        parent = _parent(out, path)
        if isinstance(parent, dict) and rng.random() < 0.25:
            del parent[path[-1]]
            yield f"delete {path}", out
        else:
            value = rng.choice(WRONG_VALUES)
            parent[path[-1]] = value
            yield f"set {path} = {value!r}", out


def byte_mutants(data: bytes, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """Fixed pathological inputs, then ``count`` random truncations / byte flips."""
    yield "empty", b""
    yield "binary garbage", bytes(rng.randrange(256) for _ in range(512))
    yield "deep nesting", b"[" * 100_000 + b"]" * 100_000
    yield "deep nesting (unclosed)", b'{"a":' * 50_000
    yield "not utf-8", b"\xff\xfe" + data[:100]
    yield "json null", b"null"
    yield "json list", b"[1, 2, 3]"
    for _ in range(count):
        if rng.random() < 0.5:
            cut = rng.randrange(1, max(2, len(data)))
            yield f"truncated at {cut}", data[:cut]
        else:
            buf = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            yield "flipped bytes", bytes(buf)


def check_reader(read: Callable[[Path], Any], path: Path, cases: Iterator[tuple[str, bytes]]) -> dict[str, int]:
    """Write each case to ``path`` and read it; returns counts of accepted / rejected cases.

    Raises AssertionError (naming the case) for any exception that is not a one-line UserError.
    """
    counts = {"accepted": 0, "rejected": 0}
    for what, data in cases:
        path.write_bytes(data)
        try:
            read(path)
        except UserError as e:
            msg = str(e)
            assert msg and "\n" not in msg, f"{what}: multi-line or empty message {msg!r}"
            counts["rejected"] += 1
        except Exception as e:  # noqa: BLE001 - the point is to catch everything else
            raise AssertionError(f"{what}: {type(e).__name__}: {e!s:.300}") from e
        else:
            counts["accepted"] += 1
    return counts


def encode(cases: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, bytes]]:
    for what, doc in cases:
        yield what, json.dumps(doc).encode()
