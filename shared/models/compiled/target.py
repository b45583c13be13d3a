"""What artifacts are built for: the platform's CPU baseline, the toolchain versions and the
compile options; whether this process can load them."""

from __future__ import annotations

import functools
import importlib.util
import platform
import sys
import threading

# Flex Consumption runs Linux on x86-64. Artifacts are built for x86-64-v3 (AVX2, FMA, BMI2:
# every x86-64 server CPU since 2015), so one artifact serves every instance; an instance whose
# CPU lacks one of these features serves LightGBM instead of loading the artifact.
PLATFORM_TARGET = {"triple": "x86_64-unknown-linux-gnu", "cpu": "x86-64-v3", "features": ""}
REQUIRED_FEATURES = ("avx", "avx2", "bmi", "bmi2", "cmov", "cx16", "cx8", "f16c", "fma", "fxsr",
                     "lzcnt", "mmx", "movbe", "popcnt", "sahf", "sse", "sse2", "sse3", "sse4.1",
                     "sse4.2", "ssse3", "xsave")

# Trees in blocks of 8 (for each block, every row: instruction-cache blocking; lleaves' default
# is 34, which compiles ~40% slower and predicts no faster here), large code model (needed by big
# forests), O3; doubles throughout.
COMPILE_OPTIONS = {"fblocksize": 8, "codemodel": "large", "speed_level": 3, "raw_score": True,
                   "fp64": True}


def can_load() -> bool:
    """llvmlite is installed (checked without importing it)."""
    return importlib.util.find_spec("llvmlite") is not None


def can_compile() -> bool:
    """lleaves and llvmlite are installed (checked without importing them)."""
    return can_load() and importlib.util.find_spec("lleaves") is not None


def llvm_binding():
    """``llvmlite.binding``, imported on first use (it loads LLVM: not at import time)."""
    import llvmlite.binding as llvm

    return llvm


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """The lleaves and llvmlite versions (part of the artifact's key), from package metadata:
    nothing is imported (read once: importlib.metadata scans the path)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("lleaves", "llvmlite"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return dict(found)


_HOST: dict[str, str] | None = None
_HOST_LOCK = threading.Lock()


def host_problem(target: dict[str, str] = PLATFORM_TARGET) -> str | None:
    """Why this process cannot run code built for ``target`` (``None``: it can)."""
    global _HOST
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        return f"this machine is {sys.platform}/{machine}, artifacts are for {target['triple']}"
    with _HOST_LOCK:
        if _HOST is None:
            llvm = llvm_binding()
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            try:
                features = llvm.get_host_cpu_features()
                have = ",".join(sorted(name for name, on in features.items() if on))
            except RuntimeError:  # LLVM cannot always tell
                have = ""
            _HOST = {"cpu": llvm.get_host_cpu_name(), "features": have}
        host = dict(_HOST)
    found = set(host["features"].split(","))
    if target["cpu"] == PLATFORM_TARGET["cpu"]:
        missing = [f for f in REQUIRED_FEATURES if f not in found]
        if missing:
            return (f"this CPU ({host['cpu']}) lacks {', '.join(missing)}, needed by code "
                    f"built for {target['cpu']}")
    return None
