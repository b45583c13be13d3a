"""Timer schedule monitoring as the host's ``StorageScheduleMonitor`` does it: each monitored
timer's :class:`~devhost.invocation.ScheduleStatus` is a JSON blob in the host's storage
(container ``azure-webjobs-hosts``, ``timers/<host id>/Host.Functions.<name>/status``), read at
start-up to tell whether an occurrence was missed while the host was down, and written after
each run."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from .invocation import DEFAULT_TIME, ScheduleStatus
from .local_settings import ConfigError
from .ncrontab import Schedule
from .queue_runner import connection_string

log = logging.getLogger("devhost.timers")
HOSTS_CONTAINER = "azure-webjobs-hosts"
HOST_ID_SETTING = "AzureFunctionsWebHost__hostid"  # the host's AzureFunctionsWebHost:hostid
MAX_HOST_ID_LENGTH = 32


@dataclass(frozen=True)
class PastDueCheck:
    """What the host's listener makes of the recorded status when it starts."""

    status: ScheduleStatus  # the status the listener schedules from
    store: ScheduleStatus | None  # the record to write back (None: it is current)
    past_due: bool  # an occurrence was missed: run at once, with IsPastDue


def check_past_due(recorded: ScheduleStatus | None, schedule: Schedule,
                   now: datetime) -> PastDueCheck:
    """The host's ``ScheduleMonitor.CheckPastDueAsync`` and the listener's start: past due when
    ``now`` is after the recorded next occurrence. A timer never recorded gets a first record
    (its next occurrence from now). A record whose next occurrence does not follow from its
    last run (or its last update) under this schedule means the schedule changed: the next
    occurrence is recomputed, from now if the expected one has already passed, so that a
    schedule change is never past due."""
    if recorded is None:
        upcoming = schedule.next_after(now)
        return PastDueCheck(status=ScheduleStatus(DEFAULT_TIME, upcoming, DEFAULT_TIME),
                            store=ScheduleStatus(DEFAULT_TIME, upcoming, now), past_due=False)
    if recorded.last != DEFAULT_TIME:
        basis = recorded.last
    elif recorded.last_updated != DEFAULT_TIME:
        basis = recorded.last_updated
    else:
        basis = now
    expected = schedule.next_after(basis)
    status, store = recorded, None
    if recorded.next != expected:
        if now > expected:
            basis, expected = now, schedule.next_after(now)
        status = store = ScheduleStatus(DEFAULT_TIME, expected, basis)
    return PastDueCheck(status=status, store=store, past_due=now > status.next)


def host_id(env: Mapping[str, str], app_dir: Path) -> str:
    """The host id the status blobs are kept under: the ``AzureFunctionsWebHost__hostid``
    setting, else, as the host does when it runs locally, the machine's name (letters and
    digits) and a hash of the app's folder, cut to 32 characters and lowercased. (The host's
    hash is its own: the default id differs from Core Tools' for the same folder.)"""
    for key, value in env.items():
        if key.casefold() in (HOST_ID_SETTING.casefold(), "azurefunctionswebhost:hostid"):
            return value
    machine = re.sub(r"[^0-9A-Za-z]", "", socket.gethostname())
    text = f"{machine}-{zlib.crc32(os.fsencode(app_dir.resolve()))}"
    return text[:MAX_HOST_ID_LENGTH].lower().rstrip("-")


class StorageScheduleMonitor:
    """Status records in blob storage. Reads and writes run in a thread (the storage SDK is
    synchronous); a failure to write is logged and otherwise ignored, as the host's best-effort
    update does."""

    def __init__(self, connection: str, host: str) -> None:
        self.host_id = host
        service = BlobServiceClient.from_connection_string(connection)
        self._container = service.get_container_client(HOSTS_CONTAINER)
        self._container_exists = False

    @classmethod
    def from_settings(cls, env: Mapping[str, str], app_dir: Path) -> StorageScheduleMonitor | None:
        """The monitor on the host's storage (``AzureWebJobsStorage``); None, with a warning,
        when that is not set."""
        try:
            connection = connection_string("Storage", env)
        except ConfigError:
            log.warning("AzureWebJobsStorage is not set: timer schedules are not monitored "
                        "(no past-due runs after a restart; the host needs the setting)")
            return None
        return cls(connection, host_id(env, app_dir))

    def blob_name(self, function_name: str) -> str:
        return f"timers/{self.host_id}/Host.Functions.{function_name}/status"

    async def get(self, function_name: str) -> ScheduleStatus | None:
        """The recorded status; None when the timer has none yet."""
        return await asyncio.to_thread(self._get, function_name)

    async def update(self, function_name: str, status: ScheduleStatus) -> None:
        try:
            await asyncio.to_thread(self._update, function_name, status)
        except Exception as exc:
            log.error("Function '%s' failed to update the timer trigger status (%s: %s)",
                      function_name, type(exc).__name__, exc)

    def _get(self, function_name: str) -> ScheduleStatus | None:
        try:
            text = self._container.download_blob(self.blob_name(function_name)).readall()
        except ResourceNotFoundError:  # no record, or no container yet
            return None
        return ScheduleStatus.from_json(json.loads(text))

    def _update(self, function_name: str, status: ScheduleStatus) -> None:
        if not self._container_exists:
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            self._container_exists = True
        self._container.upload_blob(self.blob_name(function_name), json.dumps(status.to_json()),
                                    overwrite=True)
