"""Fixtures for the devhost tests: the sample app, its settings, and hosts serving it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from devhost.process import DevHost
from tests.azurite_support import new_container, unique

SAMPLE_APP = Path(__file__).parent / "sample_app"
FUNCTION_KEY = "test-function-key"
MASTER_KEY = "test-master-key"
T = TypeVar("T")


def worker_library_unavailable() -> str | None:
    """Why Microsoft's worker library cannot drive the functions in this interpreter (None when
    it can): it needs Python 3.13+, azure-functions-runtime and the FunctionRpc messages."""
    from devhost import worker_library

    try:
        worker_library.load_runtime()
        worker_library.load_protos()
    except worker_library.WorkerUnavailable as exc:
        return str(exc)
    return None


WORKERS = [pytest.param("library", marks=pytest.mark.skipif(
               worker_library_unavailable() is not None,
               reason=f"worker library unavailable: {worker_library_unavailable()}")),
           "builtin"]



def wait_for(probe: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="module")
def results_container(azurite):
    """The blob container the sample queue function records deliveries in."""

    client = new_container(azurite.connection_string, unique("results"))
    yield client
    client.delete_container()


@pytest.fixture(scope="module")
def sample_env(azurite, results_container) -> dict[str, str]:
    """Settings every sample host gets (tests add their own queue name)."""
    return {"AzureWebJobsStorage": azurite.connection_string,
            "SAMPLE_RESULTS_CONTAINER": results_container.container_name,
            "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY}


@pytest.fixture
def start_host(tmp_path) -> Iterator[Callable[..., DevHost]]:
    """Start sample-app hosts for one test; all are stopped at its end, logs shown on failure."""
    hosts: list[DevHost] = []

    def start(env: dict[str, str], **options) -> DevHost:
        host = DevHost(SAMPLE_APP, env, log_path=tmp_path / f"devhost-{len(hosts)}.log", **options)
        hosts.append(host)
        return host.start(timeout=30)

    yield start
    for host in hosts:
        host.stop()
