"""Shared fixtures: one real Azurite and one set of trained demo models per test session."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from devhost.azurite import Azurite
from scorefn.demo.models import DemoModel, train_demo_models
from tests.azurite_support import new_container

# The rollout controller's and the drift evaluation's timers bind %ROLLOUT_SCHEDULE% and
# %MONITOR_SCHEDULE%: a local host refuses an app whose setting is missing, as Azure's does.
# Hosts started by tests inherit this environment; once a year is "never" for them, and the
# rollout and monitoring tests set their own schedule.
os.environ.setdefault("ROLLOUT_SCHEDULE", "0 0 0 1 1 *")
os.environ.setdefault("MONITOR_SCHEDULE", "0 0 0 1 1 *")


SWEEP_INTERVAL_MS = 24 * 3600 * 1000
_session_azurite: list[Azurite] = []  # the session's Azurite, once a test asked for it


@pytest.fixture(scope="session")
def azurite():
    """A real Azurite on free 127.0.0.1 ports, in-memory, stopped at the end of the session.
    Its sweep of deleted data runs once a day instead of every 10 minutes: a session's worth of
    deleted containers made the sweep hold Azurite's one thread for over a minute (see
    devhost/azurite_gc.js); what a session uploads fits in memory."""
    server = Azurite(gc_interval_ms=SWEEP_INTERVAL_MS).start()
    _session_azurite.append(server)
    yield server
    _session_azurite.clear()
    server.stop()


@pytest.fixture(autouse=True, scope="module")
def _storage_left_clean_by_each_module():
    """The containers and queues a test module made are deleted after it. Azurite keeps
    everything in memory and looks blobs up by scanning: with a whole suite's data in it, its
    one thread went busy for a minute at a time late in the run (storage timeouts in the soak,
    ~100 s stalls in single tests)."""
    before = _storage_names() if _session_azurite else (set(), set())
    yield
    if _session_azurite:
        _delete_new(before)


def _storage_names() -> tuple[set[str], set[str]]:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    conn = _session_azurite[0].connection_string
    return ({c.name for c in BlobServiceClient.from_connection_string(conn).list_containers()},
            {q.name for q in QueueServiceClient.from_connection_string(conn).list_queues()})


def _delete_new(before: tuple[set[str], set[str]]) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    conn = _session_azurite[0].connection_string
    blobs = BlobServiceClient.from_connection_string(conn)
    queues = QueueServiceClient.from_connection_string(conn)
    containers, queue_names = _storage_names()
    for name in containers - before[0]:
        try:
            blobs.delete_container(name)
        except ResourceNotFoundError:
            pass
    for name in queue_names - before[1]:
        try:
            queues.delete_queue(name)
        except ResourceNotFoundError:
            pass


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, DemoModel]:
    """The demo models, trained once per session on generated data."""
    return train_demo_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def blob_service(azurite):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(blob_service):
    """A fresh, empty blob container for one test."""
    client = new_container(blob_service, f"t{uuid.uuid4().hex[:20]}")
    yield client
    client.delete_container()


def upload(container, name: str, path_or_bytes) -> None:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    container.upload_blob(name, data, overwrite=True)


@pytest.fixture(scope="session")
def app_functions():
    """function_app.py indexed once, as the worker does (a second get_functions() on the same
    app raises on 'duplicate' names)."""
    import function_app

    return function_app.app.get_functions()
