"""The artifact: its key and blob path, and the envelope around the object code (magic, a
header naming the key, what it was made of, and the SHA-256 and sizes of the objects). A
damaged or misplaced artifact is refused before LLVM sees it (LLVM aborts the process on some
malformed objects); the envelope is a correctness check, not a security boundary (see
docs/compiled-trees.md, "Trust boundary")."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.models.compiled.errors import CompileError
from shared.models.compiled.target import COMPILE_OPTIONS

FORMAT = 2  # part of the key: a new format never reads an old artifact
BLOB_PREFIX = ".compiled/"
ARTIFACT_SUFFIX = ".bin"
MAX_HEADER_BYTES = 1 << 20
_MAGIC = b"scorefn-compiled-trees\n"
_ELF_X86_64 = 62


def cache_key(*, model_sha256: str, target: dict[str, str],
              tool_versions: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The artifact's key (hex) and what it is made of: the model's content (SHA-256 of the
    model file as stored), the lleaves and llvmlite versions, the target and the options."""
    inputs = {"format": FORMAT, "model_sha256": model_sha256, "versions": tool_versions,
              "target": target, "options": COMPILE_OPTIONS}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return digest[:40], inputs


def blob_path(model_path: str, key: str) -> str:
    """Where the artifact ``key`` of the model blob ``model_path`` is kept (models container)."""
    return f"{BLOB_PREFIX}{model_path}/{key}{ARTIFACT_SUFFIX}"


def pack(objects: list[bytes], key: str, inputs: dict[str, Any], compile_seconds: float, *,
         traits: dict[str, Any] | None = None, rows: np.ndarray | None = None) -> bytes:
    """An artifact: magic, header (key, inputs, SHA-256 and sizes of the objects), objects; and,
    when given, the model's traits and the rows of the check an instance runs before serving
    it (so that it need not analyse the model's text on the first request's path)."""
    extra: dict[str, Any] = {}
    tail = b""
    if traits is not None and rows is not None:
        rows = np.ascontiguousarray(rows, dtype="<f8")
        extra = {"traits": traits, "rows_shape": list(rows.shape)}
        tail = rows.tobytes()
    payload = b"".join(objects) + tail
    header = json.dumps({"key": key, "inputs": inputs, "sha256": hashlib.sha256(payload).hexdigest(),
                         "sizes": [len(o) for o in objects], "compile_seconds": round(compile_seconds, 3),
                         "created": time.time(), **extra}, sort_keys=True).encode()
    return _MAGIC + len(header).to_bytes(4, "big") + header + payload


@dataclass(frozen=True)
class Contents:
    """What a verified artifact holds."""

    objects: list[bytes]
    header: dict[str, Any]
    rows: np.ndarray | None  # the check's rows, when the artifact carries them


def header_of(data: bytes) -> dict[str, Any]:
    """An artifact's header, unverified (for tools and tests)."""
    start = len(_MAGIC) + 4
    return json.loads(data[start:start + int.from_bytes(data[len(_MAGIC):start], "big")])


def unpack(data: bytes, key: str, inputs: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    """The objects and header of an artifact made for ``key`` (see :func:`unpack_all`)."""
    contents = unpack_all(data, key, inputs)
    return contents.objects, contents.header


def unpack_all(data: bytes, key: str, inputs: dict[str, Any]) -> Contents:
    """The contents of an artifact made for ``key``; :class:`CompileError` otherwise.

    Nothing reaches LLVM unless the envelope names this key and the digest matches: LLVM aborts
    the whole process on some malformed objects instead of raising."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise CompileError("damaged", "not a scorefn compiled-trees artifact")
    start = len(_MAGIC) + 4
    size = int.from_bytes(data[len(_MAGIC):start], "big")
    if size > MAX_HEADER_BYTES or start + size > len(data):
        raise CompileError("damaged", "artifact header is damaged")
    try:
        header = json.loads(data[start:start + size])
    except ValueError:
        raise CompileError("damaged", "artifact header is damaged") from None
    if not isinstance(header, dict) or header.get("key") != key or header.get("inputs") != inputs:
        raise CompileError("foreign", "artifact was made for another model version, target or "
                                      "toolchain")
    payload = memoryview(data)[start + size:]
    sizes = header.get("sizes")
    shape = header.get("rows_shape")
    rows_bytes = 0
    if isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape):
        rows_bytes = shape[0] * shape[1] * 8
    if (not isinstance(sizes, list) or not sizes or not all(isinstance(n, int) and n > 0 for n in sizes)
            or sum(sizes) + rows_bytes != len(payload)
            or hashlib.sha256(payload).hexdigest() != header.get("sha256")):
        raise CompileError("damaged", "artifact is corrupted (size or SHA-256 mismatch)")
    objects, offset = [], 0
    for n in sizes:
        objects.append(bytes(payload[offset:offset + n]))
        offset += n
    for obj in objects:
        _check_object_header(obj)
    rows = (np.frombuffer(payload[offset:], dtype="<f8").reshape(shape).astype(np.float64)
            if rows_bytes and isinstance(header.get("traits"), dict) else None)
    return Contents(objects, header, rows)


def _check_object_header(obj: bytes) -> None:
    """Refuse an object that is not a 64-bit little-endian relocatable ELF file for x86-64."""
    if (len(obj) < 64 or obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1
            or int.from_bytes(obj[16:18], "little") != 1  # ET_REL
            or int.from_bytes(obj[18:20], "little") != _ELF_X86_64):
        raise CompileError("damaged", "object is not a relocatable x86-64 ELF file")
