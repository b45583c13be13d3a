"""Queue triggers against real storage with the Functions host's semantics (host.json
``extensions.queues``): batched polling with exponential back-off, a renewed lease while the
function runs, delete on success, release or poison on failure."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from .app_index import QueueFunction
from .invocation import InvocationContext, Invoker, TraceContext, new_traceparent, user_traceback
from .local_settings import ConfigError, config_get, parse_duration

log = logging.getLogger("devhost.queues")
T = TypeVar("T")
MIN_POLLING_INTERVAL = 0.1  # the host's QueuePollingIntervals.Minimum


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
    def from_host_json(cls, host: Mapping[str, Any]) -> "QueueOptions":
        section = config_get(host, "extensions", "queues", default={}) or {}

        def get(key: str, default: Any) -> Any:
            return config_get(section, key, default=default)

        batch_size = int(get("batchSize", 16))
        if not 1 <= batch_size <= 32:
            raise ConfigError("host.json extensions.queues.batchSize must be between 1 and 32")
        encoding = str(get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ConfigError("host.json extensions.queues.messageEncoding must be base64 or none")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=int(get("newBatchThreshold", batch_size // 2)),
            max_polling_interval=max(MIN_POLLING_INTERVAL,
                                     parse_duration(get("maxPollingInterval", 60))),
            visibility_timeout=parse_duration(get("visibilityTimeout", 0)),
            max_dequeue_count=max(1, int(get("maxDequeueCount", 5))),
            message_encoding=encoding,
        )


def connection_string(setting: str, env: Mapping[str, str]) -> str:
    """The connection named by a trigger: the setting itself or ``AzureWebJobs<setting>``."""
    for name in (setting, f"AzureWebJobs{setting}"):
        if env.get(name):
            return env[name]
    raise ConfigError(f"queue connection {setting!r}: app setting {setting!r} is not set "
                     "(devhost needs a connection string, e.g. Azurite's)")


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

    async def stop(self, grace: float) -> bool:
        """Stop polling and wait up to ``grace`` seconds for messages being processed; True
        when all of them finished."""
        self.stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
            for task in self._tasks:
                task.cancel()
        in_flight = [t for p in self._pollers for t in p.in_flight]
        if in_flight:
            await asyncio.wait(in_flight, timeout=max(0.1, deadline - loop.time()))
        self._io.shutdown(wait=False, cancel_futures=True)
        return all(t.done() for t in in_flight)

    async def io(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._io, functools.partial(call, *args, **kwargs))


class _Poller:
    def __init__(self, runner: QueueRunner, function: QueueFunction, conn: str) -> None:
        self.runner, self.function = runner, function
        self.queue = QueueClient.from_connection_string(conn, function.queue_name)
        self.poison = QueueClient.from_connection_string(conn, f"{function.queue_name}-poison")
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
                batch = await runner.io(lambda: list(self.queue.receive_messages(
                    messages_per_page=options.batch_size, max_messages=options.batch_size,
                    visibility_timeout=runner.lease_seconds)))
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

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception():
            log.error("queue %s: message handling failed", self.function.queue_name,
                      exc_info=task.exception())

    async def _process(self, message: StorageMessage) -> None:
        name, queue, options = self.function.name, self.function.queue_name, self.runner.options
        lease = _Lease(self, message)
        if message.dequeue_count > options.max_dequeue_count:
            log.warning("queue %s: message %s dequeued %d times; moving it to %s", queue,
                        message.id, message.dequeue_count, self.poison.queue_name)
            await lease.finish(self._move_to_poison)
            return
        body = self._decode(message.content or "")
        if body is None:
            log.error("queue %s: message %s is not valid base64 (host.json messageEncoding is "
                      "base64); delivery %d failed", queue, message.id, message.dequeue_count)
            await self._failed(message, lease)
            return
        lease.renewer = asyncio.create_task(lease.renew_forever())
        context = InvocationContext(name, self.runner.app_dir,
                                    TraceContext(new_traceparent(), "", {"OperationName": name}))
        try:
            await self.runner.invoker.invoke(self.function, QueueMessage(
                id=message.id, body=body, dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on, insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt),
                context)
        except Exception as exc:
            log.error("Executed 'Functions.%s' (Failed, Id=%s, message %s, dequeue count %d)\n%s",
                      name, context.invocation_id, message.id, message.dequeue_count,
                      user_traceback(exc))
            await self._failed(message, lease)
            return
        log.debug("Executed 'Functions.%s' (Succeeded, Id=%s)", name, context.invocation_id)
        await lease.finish(self._delete)

    async def _failed(self, message: StorageMessage, lease: "_Lease") -> None:
        """Retry after visibilityTimeout, or poison once maxDequeueCount deliveries failed."""
        options = self.runner.options
        if message.dequeue_count >= options.max_dequeue_count:
            log.warning("queue %s: message %s reached maxDequeueCount %d; moving it to %s",
                        self.function.queue_name, message.id, options.max_dequeue_count,
                        self.poison.queue_name)
            await lease.finish(self._move_to_poison)
        else:
            await lease.finish(self._release)

    def _decode(self, content: str) -> bytes | None:
        """The message body as bytes; None when it is not valid base64 (and must be)."""
        if self.runner.options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            return None

    def _delete(self, message: StorageMessage, pop_receipt: str) -> None:
        self.queue.delete_message(message.id, pop_receipt)

    def _release(self, message: StorageMessage, pop_receipt: str) -> None:
        self.queue.update_message(message.id, pop_receipt,
                                  visibility_timeout=int(self.runner.options.visibility_timeout))

    def _release_now(self, message: StorageMessage, pop_receipt: str) -> None:
        self.queue.update_message(message.id, pop_receipt, visibility_timeout=0)

    def _move_to_poison(self, message: StorageMessage, pop_receipt: str) -> None:
        _create_if_missing(self.poison)
        # The raw stored text: the poison message keeps the original encoding.
        self.poison.send_message(message.content)
        self.queue.delete_message(message.id, pop_receipt)


class _Lease:
    """The message's current pop receipt, renewed every half lease until ``finish``."""

    def __init__(self, poller: _Poller, message: StorageMessage) -> None:
        self.poller, self.message = poller, message
        self.pop_receipt: str = message.pop_receipt
        self.lock = asyncio.Lock()
        self.renewer: asyncio.Task[None] | None = None

    async def renew_forever(self) -> None:
        runner = self.poller.runner
        while True:
            await asyncio.sleep(runner.lease_seconds / 2)
            async with self.lock:
                try:
                    updated = await runner.io(self.poller.queue.update_message, self.message.id,
                                              self.pop_receipt,
                                              visibility_timeout=runner.lease_seconds)
                    self.pop_receipt = updated.pop_receipt
                except Exception as exc:
                    log.warning("queue %s: renewing the lease of message %s failed (%s)",
                                self.poller.function.queue_name, self.message.id,
                                type(exc).__name__)

    async def finish(self, action: Callable[[StorageMessage, str], None]) -> None:
        # Holding the lock means no renewal is mid-flight, so the pop receipt is current.
        async with self.lock:
            if self.renewer is not None:
                self.renewer.cancel()
            try:
                await self.poller.runner.io(action, self.message, self.pop_receipt)
            except Exception as exc:
                log.warning("queue %s: %s of message %s failed (%s); it will be delivered again",
                            self.poller.function.queue_name, action.__name__.strip("_"),
                            self.message.id, type(exc).__name__)


def _create_if_missing(client: QueueClient) -> None:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
