"""Queue triggers against real storage with the Functions host's semantics (host.json
``extensions.queues``, Azure Storage Queues extension v5): batched polling with exponential
back-off, a renewed lease while the function runs, delete on success, release or poison on
failure. A queue whose name ends in ``-poison`` (or is too long for the suffix) has no poison
queue: its failed messages are neither released nor moved."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from .app_index import QueueFunction, is_valid_queue_name
from .invocation import InvocationFailed, Invoker, QueueCall, TraceContext, new_traceparent
from .local_settings import ConfigError, config_get, parse_duration

log = logging.getLogger("devhost.queues")
T = TypeVar("T")
MIN_POLLING_INTERVAL = 0.1  # the host's QueuePollingIntervals.Minimum
MAX_BATCH_SIZE = 32  # Get Messages returns at most 32
POISON_SUFFIX = "-poison"
# (status, error code) pairs after which the host considers the message no longer its own.
_OWNERSHIP_LOST = {(400, "PopReceiptMismatch"), (404, "MessageNotFound"),
                   (404, "QueueNotFound"), (409, "QueueBeingDeleted"), (409, "QueueDisabled")}


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host: Mapping[str, Any],
                       processors: int | None = None) -> QueueOptions:
        """Read and check the options as the host's QueuesOptions does: a value it would reject
        at startup is a ConfigError. ``processors`` defaults to :func:`processor_count`."""
        section = config_get(host, "extensions", "queues", default={}) or {}
        batch_size = _int_option(section, "batchSize", 16)
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ConfigError("host.json extensions.queues.batchSize must be between 1 and 32")
        threshold = _optional_int_option(section, "newBatchThreshold", None)
        if threshold is None:
            threshold = (batch_size // 2) * (processors or processor_count(os.environ))
        elif threshold < 0:
            raise ConfigError("host.json extensions.queues.newBatchThreshold must not be negative")
        max_polling = _duration_option(section, "maxPollingInterval", "00:01:00")
        if max_polling < MIN_POLLING_INTERVAL:
            raise ConfigError("host.json extensions.queues.maxPollingInterval must not be less "
                              "than 00:00:00.1 (100 ms)")
        max_dequeue = _int_option(section, "maxDequeueCount", 5)
        if max_dequeue < 1:
            raise ConfigError("host.json extensions.queues.maxDequeueCount must be at least 1")
        encoding = str(config_get(section, "messageEncoding", default="base64")).lower()
        if encoding not in ("base64", "none"):
            raise ConfigError("host.json extensions.queues.messageEncoding must be base64 or none")
        return cls(batch_size=batch_size, new_batch_threshold=threshold,
                   max_polling_interval=max_polling,
                   visibility_timeout=_duration_option(section, "visibilityTimeout", "00:00:00"),
                   max_dequeue_count=max_dequeue, message_encoding=encoding)


def _int_option(section: Mapping[str, Any], key: str, default: int) -> int:
    value = _optional_int_option(section, key, default)
    if value is None:  # an explicit null
        raise ConfigError(f"host.json extensions.queues.{key} must be an integer (got None)")
    return value


def _optional_int_option(section: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = config_get(section, key, default=default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ConfigError(f"host.json extensions.queues.{key} must be an integer (got {value!r})")


def _duration_option(section: Mapping[str, Any], key: str, default: str) -> float:
    try:
        return parse_duration(config_get(section, key, default=default))
    except ConfigError as exc:
        raise ConfigError(f"host.json extensions.queues.{key}: {exc}") from None


def processor_count(env: Mapping[str, str]) -> int:
    """The host's processor count for the default newBatchThreshold: 1 on the Consumption plan
    (``WEBSITE_SKU=Dynamic``), else the processors this process may run on."""
    if env.get("WEBSITE_SKU", "").lower() == "dynamic":
        return 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def poison_queue_name(queue: str) -> str | None:
    """``<queue>-poison``, or None where the host has no poison queue: for a queue that is
    itself a poison queue, and when the suffixed name would be invalid (too long)."""
    if queue.endswith(POISON_SUFFIX):
        return None
    name = queue + POISON_SUFFIX
    return name if is_valid_queue_name(name) else None


def lost_ownership(exc: BaseException) -> bool:
    """True for the storage errors meaning the message is gone or another receiver holds it:
    pop receipt mismatch, message or queue not found, queue being deleted or disabled."""
    if not isinstance(exc, HttpResponseError):
        return False
    # error_code is set by the storage SDK (process_storage_error), not by azure-core.
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    return (exc.status_code, code) in _OWNERSHIP_LOST


def receive_batch(client: QueueClient, count: int, visibility_timeout: int) -> list[StorageMessage]:
    """One Get Messages request for up to ``count`` messages, as the host's ReceiveMessages.
    (Iterating ``receive_messages`` instead keeps requesting pages while any come back, and a
    failing later page would lose the messages already received.)"""
    pages = client.receive_messages(messages_per_page=count,
                                    visibility_timeout=visibility_timeout).by_page()
    return list(next(pages, []))


def connection_string(setting: str, env: Mapping[str, str]) -> str:
    """The connection named by a trigger, looked up as the host does: ``AzureWebJobs<name>``
    before ``<name>``, each first in the ``ConnectionStrings`` section (environment variables
    ``ConnectionStrings__X`` or ``ConnectionStrings:X``). Names are case-insensitive, as .NET
    configuration keys are; the first one set wins, even if it is empty."""
    for name in (f"AzureWebJobs{setting}", setting):
        for key in (f"ConnectionStrings:{name}", f"ConnectionStrings__{name}", name):
            value = _setting(env, key)
            if value is None:
                continue
            if not value.strip():
                raise ConfigError(f"queue connection {setting!r}: app setting {key!r} is empty")
            return value
    raise ConfigError(f"queue connection {setting!r}: neither app setting "
                      f"'AzureWebJobs{setting}' nor {setting!r} is set (devhost needs a "
                      "connection string, e.g. Azurite's)")


def _setting(env: Mapping[str, str], key: str) -> str | None:
    if key in env:
        return env[key]
    wanted = key.casefold()
    return next((v for k, v in env.items() if k.casefold() == wanted), None)


class QueueRunner:
    """One poller per queue function, sharing the invoker's thread pool for sync functions.
    Storage calls (the SDK is synchronous) run in a separate small pool."""

    def __init__(self, functions: list[QueueFunction], options: QueueOptions, invoker: Invoker,
                 env: Mapping[str, str], *, app_dir: str, lease_seconds: int = 600) -> None:
        self.options, self.invoker, self.app_dir = options, invoker, app_dir
        self.lease_seconds = max(1, int(lease_seconds))
        threads = min(64, 8 + 2 * options.batch_size * len(functions))
        self._io = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="devhost-storage")
        self._pollers = [_Poller(self, f, connection_string(f.connection, env)) for f in functions]
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 10.0) -> None:
        """Create missing trigger queues, then start polling. Creation is awaited at most
        ``timeout`` seconds (storage may be down): the pollers keep trying anyway."""
        creating = [asyncio.ensure_future(p.ensure_queue()) for p in self._pollers]
        for task in creating:  # a late failure is not worth an "exception never retrieved"
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        done, pending = await asyncio.wait(creating, timeout=timeout) if creating else ((), ())
        if pending or any(t.exception() for t in done):
            log.warning("could not create the trigger queues yet; polling will keep trying")
        self._tasks = [asyncio.create_task(p.run()) for p in self._pollers]

    async def stop(self, timeout: float, abandon: asyncio.Event | None = None) -> bool:
        """Stop polling and wait for the messages being processed, as the host's StopAsync
        does, but at most ``timeout`` seconds (or until ``abandon`` is set). True when all of
        them finished; otherwise says loudly which were abandoned."""
        self.stopping.set()
        deadline = asyncio.get_running_loop().time() + timeout
        # Pollers return promptly once stopping (handing back any batch received meanwhile).
        await _wait_all(self._tasks, deadline, abandon)
        in_flight = [t for p in self._pollers for t in p.in_flight]
        finished = await _wait_all(in_flight, deadline, abandon)
        for task in self._tasks:
            task.cancel()
        if not finished:
            left = [p.describe_in_flight() for p in self._pollers if p.in_flight]
            log.error("SHUTDOWN INCOMPLETE: %s still being processed after %.0f s; abandoning "
                      "them (they will be delivered again when their leases run out)",
                      "; ".join(left), timeout)
        # Only now: a function finishing late still needs the pool to delete its message.
        self._io.shutdown(wait=False, cancel_futures=True)
        return finished

    async def io(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._io, functools.partial(call, *args, **kwargs))


class _Poller:
    def __init__(self, runner: QueueRunner, function: QueueFunction, conn: str) -> None:
        self.runner, self.function = runner, function
        self.queue = QueueClient.from_connection_string(conn, function.queue_name)
        poison = poison_queue_name(function.queue_name)
        self.poison = QueueClient.from_connection_string(conn, poison) if poison else None
        self.in_flight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._queue_exists = False

    async def ensure_queue(self) -> None:
        if not self._queue_exists:
            await self.runner.io(_create_if_missing, self.queue)
            self._queue_exists = True

    async def run(self) -> None:
        options, runner = self.runner.options, self.runner
        delay = MIN_POLLING_INTERVAL
        while not runner.stopping.is_set():
            if len(self.in_flight) > options.new_batch_threshold:
                self._slot_freed.clear()
                await self._until_stopping(self._slot_freed.wait())
                continue
            try:
                await self.ensure_queue()
                batch = await runner.io(receive_batch, self.queue, options.batch_size,
                                        runner.lease_seconds)
            except Exception as exc:  # storage down or throttling: keep polling, never crash
                log.warning("queue %s: receive failed (%s); retrying", self.function.queue_name,
                            type(exc).__name__)
                batch = []
            if batch and runner.stopping.is_set():
                # Received while stopping: hand them back now rather than after the lease.
                for message in batch:
                    await _Lease(self, message).finish(self._release_now)
                return
            if batch:
                delay = MIN_POLLING_INTERVAL
                for message in batch:
                    task = asyncio.create_task(self._process(message))
                    self.in_flight.add(task)
                    task.add_done_callback(self._done)
                continue
            await self._until_stopping(asyncio.sleep(delay))
            delay = min(delay * 2, options.max_polling_interval)

    async def _until_stopping(self, awaitable: Any) -> None:
        """Wait for ``awaitable`` or until the runner stops, whichever is first."""
        waiter = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.runner.stopping.wait())
        await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stop.cancel()

    def describe_in_flight(self) -> str:
        return f"{len(self.in_flight)} message(s) of queue {self.function.queue_name}"

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception():
            log.error("queue %s: message handling failed", self.function.queue_name,
                      exc_info=task.exception())

    async def _process(self, message: StorageMessage) -> None:
        name, options = self.function.name, self.runner.options
        # Get Messages always returns both; the SDK types them optional for the messages it sends.
        assert message.dequeue_count is not None and message.pop_receipt is not None
        lease = _Lease(self, message)
        body = self._decode(message.content or "")
        if body is None:
            await self._undecodable(message, lease)
            return
        if message.dequeue_count > options.max_dequeue_count:
            await self._exhausted(message, lease)
            return
        lease.start_renewing()
        call = QueueCall(id=message.id, body=body, dequeue_count=message.dequeue_count,
                         inserted_on=message.inserted_on, expires_on=message.expires_on,
                         next_visible_on=message.next_visible_on, pop_receipt=message.pop_receipt,
                         trace_context=TraceContext(new_traceparent(), "",
                                                    {"OperationName": name}))
        try:
            invocation_id = await self.runner.invoker.invoke_queue(self.function, call)
        except InvocationFailed as exc:
            log.error("Executed 'Functions.%s' (Failed, Id=%s, message %s, dequeue count %d)\n%s",
                      name, exc.invocation_id, message.id, message.dequeue_count, exc.detail)
            await self._failed(message, lease)
            return
        log.debug("Executed 'Functions.%s' (Succeeded, Id=%s)", name, invocation_id)
        await lease.finish(self._delete)

    async def _undecodable(self, message: StorageMessage, lease: _Lease) -> None:
        """Not base64 (and it must be): the host moves it to the poison queue on receipt,
        without running the function; with no poison queue it is left hidden for the lease."""
        queue = self.function.queue_name
        if self.poison is None:
            log.error("queue %s: message %s is not valid base64 (host.json messageEncoding is "
                      "base64) and the queue has no poison queue; left until its lease runs "
                      "out", queue, message.id)
            await lease.finish(None)
            return
        log.error("queue %s: message %s is not valid base64 (host.json messageEncoding is "
                  "base64); moving it to %s", queue, message.id, self.poison.queue_name)
        await lease.finish(self._move_to_poison)

    async def _exhausted(self, message: StorageMessage, lease: _Lease) -> None:
        """Dequeued more than maxDequeueCount times (earlier deliveries never completed)."""
        queue, options = self.function.queue_name, self.runner.options
        if self.poison is None:
            log.warning("queue %s: message %s dequeued %d times (maxDequeueCount %d); the queue "
                        "has no poison queue, so it is skipped and left in the queue", queue,
                        message.id, message.dequeue_count, options.max_dequeue_count)
            await lease.finish(None)
            return
        log.warning("queue %s: message %s dequeued %d times; moving it to %s", queue,
                    message.id, message.dequeue_count, self.poison.queue_name)
        await lease.finish(self._move_to_poison)

    async def _failed(self, message: StorageMessage, lease: _Lease) -> None:
        """Retry after visibilityTimeout, or poison once maxDequeueCount deliveries failed.
        Without a poison queue the message is not released: it stays hidden until its lease
        runs out (so a failing message cannot loop fast)."""
        options, queue = self.runner.options, self.function.queue_name
        assert message.dequeue_count is not None  # a received message (see _process)
        if self.poison is None:
            log.warning("queue %s: message %s failed; the queue has no poison queue, so it is "
                        "not released and is retried when its lease runs out", queue, message.id)
            await lease.finish(None)
        elif message.dequeue_count >= options.max_dequeue_count:
            log.warning("queue %s: message %s reached maxDequeueCount %d; moving it to %s",
                        queue, message.id, options.max_dequeue_count, self.poison.queue_name)
            await lease.finish(self._move_to_poison)
        else:
            await lease.finish(self._release)

    def _decode(self, content: str) -> bytes | None:
        """The message body as bytes; None when it is not valid base64 (and must be)."""
        if self.runner.options.message_encoding == "none":
            return content.encode("utf-8")
        return decode_base64(content)

    def _delete(self, message: StorageMessage, pop_receipt: str) -> None:
        self.queue.delete_message(message.id, pop_receipt)

    def _release(self, message: StorageMessage, pop_receipt: str) -> None:
        self.queue.update_message(message.id, pop_receipt,
                                  visibility_timeout=int(self.runner.options.visibility_timeout))

    def _release_now(self, message: StorageMessage, pop_receipt: str) -> None:
        self.queue.update_message(message.id, pop_receipt, visibility_timeout=0)

    def _move_to_poison(self, message: StorageMessage, pop_receipt: str) -> None:
        assert self.poison is not None
        _create_if_missing(self.poison)
        # The raw stored text: the poison message keeps the original encoding.
        self.poison.send_message(message.content)
        self.queue.delete_message(message.id, pop_receipt)


class _Lease:
    """The message's current pop receipt, renewed every half lease until ``finish``. Renewal
    stops at the first failure, as the host's UpdateQueueMessageVisibilityCommand does."""

    def __init__(self, poller: _Poller, message: StorageMessage) -> None:
        self.poller, self.message = poller, message
        assert message.pop_receipt is not None  # a received message (see _Poller._process)
        self.pop_receipt: str = message.pop_receipt
        self.lock = asyncio.Lock()
        self.renewer: asyncio.Task[None] | None = None

    def start_renewing(self) -> None:
        self.renewer = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        runner = self.poller.runner
        while True:
            await asyncio.sleep(runner.lease_seconds / 2)
            async with self.lock:
                try:
                    updated = await runner.io(self.poller.queue.update_message, self.message.id,
                                              self.pop_receipt,
                                              visibility_timeout=runner.lease_seconds)
                except Exception as exc:
                    self._renewal_failed(exc)
                    return
                # Update Message answers with the new pop receipt, or fails.
                assert updated.pop_receipt is not None
                self.pop_receipt = updated.pop_receipt

    def _renewal_failed(self, exc: Exception) -> None:
        queue, message_id = self.poller.function.queue_name, self.message.id
        if lost_ownership(exc):
            log.warning("queue %s: message %s is gone or another receiver holds it (%s); no "
                        "longer renewing its lease", queue, message_id, _error_name(exc))
        else:
            # The host's command rethrows such errors: the Functions host reports an unhandled
            # exception and shuts down. Either way the renewal ends here.
            log.error("queue %s: renewing the lease of message %s failed (%s); no longer "
                      "renewing it, so it becomes visible again when its lease runs out (the "
                      "Functions host would shut down on this error)", queue, message_id,
                      _error_name(exc))

    async def finish(self, action: Callable[[StorageMessage, str], None] | None) -> None:
        """Stop renewing, then run ``action`` (None: leave the message as it is)."""
        # Holding the lock means no renewal is mid-flight, so the pop receipt is current.
        async with self.lock:
            if self.renewer is not None:
                self.renewer.cancel()
            if action is None:
                return
            try:
                await self.poller.runner.io(action, self.message, self.pop_receipt)
            except Exception as exc:
                what = action.__name__.strip("_").replace("_", " ")
                if lost_ownership(exc):
                    log.info("queue %s: %s of message %s skipped: it is gone or another "
                             "receiver holds it (%s)", self.poller.function.queue_name, what,
                             self.message.id, _error_name(exc))
                else:
                    log.warning("queue %s: %s of message %s failed (%s); it will be delivered "
                                "again", self.poller.function.queue_name, what,
                                self.message.id, _error_name(exc))


def decode_base64(content: str) -> bytes | None:
    """Base64 as .NET's Convert.FromBase64String reads it (the host's decoder): tab, line feed,
    carriage return and space anywhere are ignored. None when it is not valid."""
    try:
        return base64.b64decode(content.translate(_BASE64_WHITESPACE), validate=True)
    except (binascii.Error, ValueError):
        return None


_BASE64_WHITESPACE = str.maketrans("", "", "\t\n\r ")


def _error_name(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


async def _wait_all(tasks: list[asyncio.Task[None]], deadline: float,
                    abandon: asyncio.Event | None) -> bool:
    """Wait until all ``tasks`` are done, the loop time reaches ``deadline`` or ``abandon`` is
    set; True when all are done. The tasks themselves are never cancelled here."""
    if not tasks:
        return True
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(tasks))}
    if abandon is not None:
        waiters.add(asyncio.ensure_future(abandon.wait()))
    timeout = max(0.0, deadline - asyncio.get_running_loop().time())
    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    return all(task.done() for task in tasks)


def _create_if_missing(client: QueueClient) -> None:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
