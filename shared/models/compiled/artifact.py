"""The artifact: its cache key and blob path, and the envelope around the object code (magic,
header naming the key, inputs and SHA-256). A corrupted or misplaced artifact is refused before
LLVM sees it (LLVM aborts the process on some malformed objects); the envelope is a correctness
check, not a security boundary (see the README, "Compiled trees")."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

from shared.models.compiled.errors import CompileError
from shared.models.compiled.target import COMPILE_OPTIONS

FORMAT = 1  # part of the cache key: a new format never reads an old artifact
BLOB_PREFIX = ".compiled/"
ARTIFACT_SUFFIX = ".bin"
_MAGIC = b"scorefn-compiled-trees\n"
_ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "arm64": 183}


def cache_key(*, source: str, path: str, version: str, target: dict[str, str],
              tool_versions: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The artifact's key (hex) and what it is made of."""
    inputs = {"format": FORMAT, "source": source, "model_path": path, "model_version": version,
              "versions": tool_versions, "target": target, "options": COMPILE_OPTIONS}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return digest[:40], inputs


def blob_path(model_path: str, key: str) -> str:
    """Where the artifact ``key`` of ``model_path`` is kept in the models container."""
    return f"{BLOB_PREFIX}{model_path}/{key}{ARTIFACT_SUFFIX}"


def pack(payload: bytes, key: str, inputs: dict[str, Any], compile_seconds: float) -> bytes:
    """An artifact: magic, header (key, inputs, SHA-256 and size of the object), object."""
    header = json.dumps({"key": key, "inputs": inputs, "sha256": hashlib.sha256(payload).hexdigest(),
                         "size": len(payload), "compile_seconds": round(compile_seconds, 3),
                         "created": time.time()}, sort_keys=True).encode()
    return _MAGIC + len(header).to_bytes(4, "big") + header + payload


def header_of(data: bytes) -> dict[str, Any]:
    """An artifact's header, unverified (for tools and tests)."""
    start = len(_MAGIC) + 4
    return json.loads(data[start:start + int.from_bytes(data[len(_MAGIC):start], "big")])


def unpack(data: bytes, key: str, inputs: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The object inside an artifact made for ``key``; :class:`CompileError` otherwise.

    Nothing reaches LLVM unless the envelope names this key and the object's digest matches:
    LLVM aborts the whole process on some malformed objects instead of raising."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise CompileError("bad_artifact", "not a scorefn compiled-trees artifact")
    start = len(_MAGIC) + 4
    size = int.from_bytes(data[len(_MAGIC):start], "big")
    if size > 1 << 20 or start + size > len(data):
        raise CompileError("bad_artifact", "artifact header is damaged")
    try:
        header = json.loads(data[start:start + size])
    except ValueError:
        raise CompileError("bad_artifact", "artifact header is damaged") from None
    if not isinstance(header, dict) or header.get("key") != key or header.get("inputs") != inputs:
        raise CompileError("foreign_artifact", "artifact was made for another model, version, "
                                               "CPU or toolchain")
    payload = data[start + size:]
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CompileError("bad_artifact", "artifact is corrupted (size or SHA-256 mismatch)")
    _check_object_header(payload)
    return payload, header


def _check_object_header(obj: bytes) -> None:
    """Refuse an object that is not a relocatable object file for this machine."""
    machine = os.uname().machine if hasattr(os, "uname") else ""
    if sys.platform.startswith("linux"):
        expected = _ELF_MACHINES.get(machine)
        if (obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != (1 if sys.byteorder == "little" else 2)
                or int.from_bytes(obj[16:18], sys.byteorder) != 1  # ET_REL
                or expected is None or int.from_bytes(obj[18:20], sys.byteorder) != expected):
            raise CompileError("bad_artifact", "object is not a relocatable ELF file for this machine")
    elif sys.platform == "darwin":
        if obj[:4] not in (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf"):
            raise CompileError("bad_artifact", "object is not a Mach-O file")
