"""What artifacts are built for: lleaves/llvmlite present, the host CPU (triple, name, features),
the toolchain versions and the compile options."""

from __future__ import annotations

import importlib.util
import threading

# lleaves' defaults: trees in blocks of 34 (instruction-cache blocking), large code model
# (needed by big forests), O3; doubles throughout.
COMPILE_OPTIONS = {"fblocksize": 34, "codemodel": "large", "speed_level": 3, "raw_score": True,
                   "fp64": True}


def available() -> bool:
    """lleaves and llvmlite are installed (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("lleaves", "llvmlite"))


_TARGET: dict[str, str] | None = None
_TARGET_LOCK = threading.Lock()


def llvm_binding():
    """``llvmlite.binding``, imported on first use (llvmlite is optional)."""
    import llvmlite.binding as llvm

    return llvm


def host_target() -> dict[str, str]:
    """This process's target: triple, CPU name and features (what artifacts are built for)."""
    global _TARGET
    with _TARGET_LOCK:
        if _TARGET is None:
            llvm = llvm_binding()
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            try:
                features = llvm.get_host_cpu_features().flatten()
            except RuntimeError:  # LLVM cannot always tell
                features = ""
            _TARGET = {"triple": llvm.get_process_triple(), "cpu": llvm.get_host_cpu_name(),
                       "features": features}
        return dict(_TARGET)


def versions() -> dict[str, str]:
    """The lleaves, llvmlite and LLVM versions (part of the cache key)."""
    from importlib.metadata import version

    llvm = llvm_binding()
    return {"lleaves": version("lleaves"), "llvmlite": version("llvmlite"),
            "llvm": ".".join(map(str, llvm.llvm_version_info))}
