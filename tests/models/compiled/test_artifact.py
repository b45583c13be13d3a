"""The artifact's envelope: what it carries comes back exactly; anything damaged, for another
key or not an x86-64 relocatable object is refused before LLVM could see it."""

from __future__ import annotations

import numpy as np
import pytest

from shared.models.compiled.artifact import blob_path, cache_key, header_of, pack, unpack_all
from shared.models.compiled.errors import CompileError
from shared.models.compiled.target import PLATFORM_TARGET


def fake_object(size: int = 200) -> bytes:
    """A 64-bit little-endian ELF header of a relocatable x86-64 object, then filler."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[16:18] = (1).to_bytes(2, "little")  # ET_REL
    header[18:20] = (62).to_bytes(2, "little")  # EM_X86_64
    return bytes(header) + bytes(range(256))[: size - 64]


KEY, INPUTS = cache_key(model_sha256="ab" * 32, target=PLATFORM_TARGET,
                        tool_versions={"lleaves": "1.3.0", "llvmlite": "0.50.0"})
TRAITS = {"objective": "binary", "params": {"sigmoid": "1"}, "num_outputs": 1, "num_features": 3,
          "unsupported": None, "zero_features": [2]}


def test_the_key_depends_on_the_model_content_toolchain_and_target():
    other_model, _ = cache_key(model_sha256="cd" * 32, target=PLATFORM_TARGET,
                               tool_versions={"lleaves": "1.3.0", "llvmlite": "0.50.0"})
    other_tools, _ = cache_key(model_sha256="ab" * 32, target=PLATFORM_TARGET,
                               tool_versions={"lleaves": "1.3.0", "llvmlite": "0.51.0"})
    other_cpu, _ = cache_key(model_sha256="ab" * 32, target={**PLATFORM_TARGET, "cpu": "x86-64-v4"},
                             tool_versions={"lleaves": "1.3.0", "llvmlite": "0.50.0"})
    assert len({KEY, other_model, other_tools, other_cpu}) == 4
    assert blob_path("churn/v2.txt", KEY) == f".compiled/churn/v2.txt/{KEY}.bin"


def test_objects_traits_and_check_rows_come_back_exactly():
    rows = np.random.default_rng(1).normal(size=(5, 3))
    rows[0, 1] = np.nan
    objects = [fake_object(300), fake_object(120)]
    contents = unpack_all(pack(objects, KEY, INPUTS, 1.5, traits=TRAITS, rows=rows), KEY, INPUTS)
    assert contents.objects == objects and contents.header["traits"] == TRAITS
    assert contents.rows is not None and np.array_equal(contents.rows, rows, equal_nan=True)
    assert contents.header["compile_seconds"] == 1.5


def test_an_artifact_without_check_rows_carries_none():
    contents = unpack_all(pack([fake_object()], KEY, INPUTS, 0.0), KEY, INPUTS)
    assert contents.rows is None and "traits" not in contents.header


@pytest.mark.parametrize("where", ["object", "rows", "truncated"])
def test_a_damaged_artifact_is_refused(where):
    data = bytearray(pack([fake_object()], KEY, INPUTS, 0.0, traits=TRAITS, rows=np.ones((2, 3))))
    if where == "object":
        data[-60] ^= 1
    elif where == "rows":
        data[-3] ^= 1
    else:
        del data[-10:]
    with pytest.raises(CompileError) as err:
        unpack_all(bytes(data), KEY, INPUTS)
    assert err.value.reason == "damaged"


def test_an_artifact_made_for_another_key_is_foreign():
    other, other_inputs = cache_key(model_sha256="cd" * 32, target=PLATFORM_TARGET,
                                    tool_versions={"lleaves": "1.3.0", "llvmlite": "0.50.0"})
    with pytest.raises(CompileError) as err:
        unpack_all(pack([fake_object()], other, other_inputs, 0.0), KEY, INPUTS)
    assert err.value.reason == "foreign"


@pytest.mark.parametrize("change", [(4, 1), (16, 3), (18, 183)])  # 32-bit; not ET_REL; aarch64
def test_objects_other_than_x86_64_relocatable_elf_are_refused(change):
    offset, value = change
    obj = bytearray(fake_object())
    if offset == 4:
        obj[4] = value
    else:
        obj[offset:offset + 2] = value.to_bytes(2, "little")
    with pytest.raises(CompileError) as err:
        unpack_all(pack([bytes(obj)], KEY, INPUTS, 0.0), KEY, INPUTS)
    assert err.value.reason == "damaged"


def test_not_an_artifact_at_all_is_damaged():
    for data in (b"", b"hello", b"scorefn-compiled-trees\n\xff\xff\xff\xff{"):
        with pytest.raises(CompileError) as err:
            unpack_all(data, KEY, INPUTS)
        assert err.value.reason == "damaged"
    assert header_of(pack([fake_object()], KEY, INPUTS, 0.0))["key"] == KEY
