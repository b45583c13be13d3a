"""The locks (requirements.txt, what Azure installs; requirements-dev.txt, what the tests run
with) hold every package at one version with its hashes, and agree with their inputs
(requirements.in, requirements-dev.in): `make lock` regenerates them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {"requirements.txt": "requirements.in", "requirements-dev.txt": "requirements-dev.in"}


def inputs(name: str) -> list[Requirement]:
    """The requirements an input file asks for, following its ``-r`` includes."""
    found: list[Requirement] = []
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found += inputs(line[3:].strip())
        elif not line.startswith("-"):
            found.append(Requirement(line))
    return found


def pins(lock: str) -> dict[str, tuple[str, list[str]]]:
    """Each locked package: its version and hashes."""
    text = (ROOT / lock).read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\[\]-]+)==([^ ;\\\n]+)[^\n]*((?:\n    --hash=\S+(?: \\)?)+)",
                         text, re.M)
    return {canonicalize_name(name.split("[")[0]): (version, re.findall(r"--hash=(\S+)", hashes))
            for name, version, hashes in entries}


@pytest.mark.parametrize("lock, source", LOCKS.items())
def test_every_requirement_of_the_input_is_locked_at_a_version_it_allows(lock, source):
    locked = pins(lock)
    for requirement in inputs(source):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} of {source} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), \
            f"{lock} has {name}=={locked[name][0]}, {source} asks for {requirement}: run `make lock`"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_line_is_one_version_with_hashes(lock):
    text = (ROOT / lock).read_text()
    requirement_lines = [line for line in text.splitlines()
                         if line and not line.startswith((" ", "#"))]
    assert requirement_lines and all("==" in line for line in requirement_lines)
    assert len(pins(lock)) == len(requirement_lines)
    assert all(hashes and all(h.startswith("sha256:") for h in hashes)
               for _, hashes in pins(lock).values())
    assert "#    make lock" in text  # says how it is regenerated


def test_the_dev_lock_runs_the_versions_azure_installs():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    differ = {name: (v, dev.get(name, ("missing",))[0]) for name, (v, _) in runtime.items()
              if dev.get(name, ("missing",))[0] != v}
    assert differ == {}


def test_azure_gets_the_worker_the_local_host_runs():
    azure = {canonicalize_name(r.name) for r in inputs("requirements.in")}
    assert {"azure-functions", "azure-functions-runtime"} <= azure
    assert pins("requirements.txt")["azure-functions"][0].startswith("2.")
