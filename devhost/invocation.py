"""Invoking functions. :class:`Invoker` is the interface the HTTP server and the queue and
timer runners use; this module's :class:`BuiltinInvoker` calls user functions as the Python
worker does (keyword arguments by binding name, a ``context`` argument when asked for, sync
functions in a thread pool, async ones awaited, the result encoded as azure.functions encodes
it). It is the fallback when Microsoft's worker library cannot be used (see
``worker_library.py``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import re
import secrets
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import azure.functions as func
from azure.functions import _abc
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from .app_index import FunctionSpec

log = logging.getLogger("devhost")
T = TypeVar("T")
# .NET's default(DateTime), which the host's schedule status holds for "never".
DEFAULT_TIME = datetime.min.replace(tzinfo=UTC)

# Frames of the host itself, left out of tracebacks so that they start at the user's code.
_HOST_CODE = tuple(os.path.dirname(f) + os.sep for f in (
    __file__, asyncio.__file__, concurrent.futures.__file__))
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


class TraceContext(_abc.TraceContext):
    """W3C trace context handed to the function (``context.trace_context``)."""

    def __init__(self, trace_parent: str, trace_state: str, attributes: dict[str, str]) -> None:
        self._trace_parent, self._trace_state = trace_parent, trace_state
        self._attributes = attributes

    @property
    def trace_parent(self) -> str:
        return self._trace_parent

    @property
    def trace_state(self) -> str:
        return self._trace_state

    @property
    def attributes(self) -> dict[str, str]:
        return self._attributes

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], function_name: str) -> TraceContext:
        """The incoming ``traceparent``/``tracestate``; a new trace when there is no valid one."""
        parent = headers.get("traceparent", "").strip().lower()
        if not _TRACEPARENT.match(parent):
            parent, state = new_traceparent(), ""
        else:
            state = headers.get("tracestate", "")
        return cls(parent, state, {"OperationName": function_name})


class RetryContext(_abc.RetryContext):
    """No retry policy runs here: always the first attempt."""

    retry_count = 0
    max_retry_count = 0
    # azure.functions types it RpcException (never None); there is none on a first attempt.
    exception = None  # type: ignore[assignment]


class InvocationContext(func.Context):
    """The ``context`` argument of one invocation."""

    def __init__(self, function_name: str, function_directory: str,
                 trace_context: TraceContext) -> None:
        self._invocation_id: str | None = None  # made when first asked for: most never are
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = trace_context
        self._thread_local_storage: threading.local | None = None

    @property
    def invocation_id(self) -> str:
        if self._invocation_id is None:
            self._invocation_id = str(uuid.uuid4())
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> RetryContext:
        return RetryContext()

    # azure.functions annotates it type[threading.local]; the worker's Context returns an
    # instance, as this one does.
    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        if self._thread_local_storage is None:
            self._thread_local_storage = threading.local()
        return self._thread_local_storage


def new_traceparent() -> str:
    ids = secrets.token_hex(24)  # one call for the trace id (16 bytes) and span id (8)
    return f"00-{ids[:32]}-{ids[32:]}-00"


def default_thread_count(environ: Mapping[str, str] = os.environ) -> int:
    """``PYTHON_THREADPOOL_THREAD_COUNT``, else ``min(32, cpus + 4)``."""
    raw = environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    if raw:  # the worker warns and keeps its default
        log.warning("PYTHON_THREADPOOL_THREAD_COUNT=%r is not a whole number >= 1; using the "
                    "default", raw[:32])
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request as the host hands it to the worker (``RpcHttp``)."""

    method: str
    url: str
    headers: dict[str, str]  # lower-cased names
    query: dict[str, str]
    route_params: dict[str, str]
    body: bytes
    trace_context: TraceContext


@dataclass(frozen=True)
class QueueCall:
    """One queue message as the host hands it to the worker: its text and trigger metadata."""

    id: str
    body: bytes
    dequeue_count: int
    inserted_on: datetime | None
    expires_on: datetime | None
    next_visible_on: datetime | None
    pop_receipt: str
    trace_context: TraceContext


@dataclass(frozen=True)
class ScheduleStatus:
    """A timer's schedule status as the host records it (``ScheduleStatus``): the last
    occurrence run, the next one expected, and when the record was last updated (the time the
    next one was computed from). :data:`DEFAULT_TIME` stands for "never"."""

    last: datetime
    next: datetime
    last_updated: datetime

    def to_json(self) -> dict[str, str]:
        """As Json.NET writes the host's record (``Last``, ``Next``, ``LastUpdated``)."""
        return {"Last": dotnet_datetimeoffset(self.last), "Next": dotnet_datetimeoffset(self.next),
                "LastUpdated": dotnet_datetimeoffset(self.last_updated)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ScheduleStatus:
        """Read a record the host (or devhost) wrote; a missing or unreadable time is "never"."""
        return cls(last=_json_time(doc.get("Last")), next=_json_time(doc.get("Next")),
                   last_updated=_json_time(doc.get("LastUpdated")))


@dataclass(frozen=True)
class TimerCall:
    """One timer firing as the host hands it to the worker: a ``TimerInfo``."""

    past_due: bool
    schedule_status: ScheduleStatus | None  # None when the schedule is not monitored
    adjust_for_dst: bool  # the schedule's AdjustForDST: true for NCRONTAB, false for a TimeSpan
    trace_context: TraceContext

    def timer_info(self) -> str:
        """The trigger value as the host sends it (``TimerInfo`` as Json.NET writes it); the
        worker's converter reads ``IsPastDue``, ``ScheduleStatus`` and ``Schedule`` from it."""
        status = self.schedule_status.to_json() if self.schedule_status else None
        return json.dumps({"Schedule": {"AdjustForDST": self.adjust_for_dst},
                           "ScheduleStatus": status, "IsPastDue": self.past_due},
                          separators=(",", ":"))


def dotnet_datetimeoffset(value: datetime) -> str:
    """A UTC time as Json.NET writes a DateTimeOffset: seconds, up to seven fraction digits
    without trailing zeros, and the offset (``2024-05-01T12:34:56+00:00``)."""
    value = value.astimezone(UTC) if value.tzinfo else value
    text = value.replace(tzinfo=None, microsecond=0).isoformat()  # four-digit years, as .NET
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "+00:00"


def _json_time(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # absent, or .NET's default(DateTime) in a zone west of UTC
        return DEFAULT_TIME


class InvocationFailed(Exception):
    """The invocation failed; ``detail`` is what the host logs (message and stack trace)."""

    def __init__(self, invocation_id: str, detail: str) -> None:
        super().__init__(detail)
        self.invocation_id, self.detail = invocation_id, detail


HttpResult = tuple[int, list[tuple[str, str]], bytes]


class Invoker:
    """Runs invocations; counts those in flight so shutdown can wait for them. Subclasses
    implement ``_http``, ``_queue`` and ``_timer``; each raises :class:`InvocationFailed` when
    the function fails, and returns the invocation id."""

    description = "?"

    def __init__(self) -> None:
        self.active = 0

    async def invoke_http(self, function: FunctionSpec, call: HttpCall) -> tuple[str, HttpResult]:
        """(invocation id, (status, headers, body)) of the function's response."""
        return await self._counted(self._http(function, call))

    async def invoke_queue(self, function: FunctionSpec, call: QueueCall) -> str:
        """Runs the function on one message; returns the invocation id."""
        return await self._counted(self._queue(function, call))

    async def invoke_timer(self, function: FunctionSpec, call: TimerCall) -> str:
        """Runs a timer function once; returns the invocation id."""
        return await self._counted(self._timer(function, call))

    async def _counted(self, invocation: Awaitable[T]) -> T:
        self.active += 1
        try:
            return await invocation
        except InvocationFailed:
            raise
        except Exception as exc:  # a fault of the invoker itself: the function failed anyway
            raise InvocationFailed("-", "".join(traceback.format_exception(exc))) from exc
        finally:
            self.active -= 1

    async def _http(self, function: FunctionSpec, call: HttpCall) -> tuple[str, HttpResult]:
        raise NotImplementedError

    async def _queue(self, function: FunctionSpec, call: QueueCall) -> str:
        raise NotImplementedError

    async def _timer(self, function: FunctionSpec, call: TimerCall) -> str:
        raise NotImplementedError

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for in-flight invocations; True when none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.active and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not self.active

    def shutdown(self) -> None:
        """Stop the thread pool without waiting for invocations still running."""


class BuiltinInvoker(Invoker):
    """devhost's own invocation code: calls the user functions directly."""

    description = "devhost's own invocation code"

    def __init__(self, threads: int, app_dir: str) -> None:
        super().__init__()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="devhost-fn")
        self.app_dir = app_dir

    async def _http(self, function: FunctionSpec, call: HttpCall) -> tuple[str, HttpResult]:
        request = func.HttpRequest(method=call.method, url=call.url, headers=call.headers,
                                   params=call.query, route_params=call.route_params,
                                   body=call.body)
        context = InvocationContext(function.name, self.app_dir, call.trace_context)
        try:
            result = await self.invoke(function, request, context)
            return context.invocation_id, response_parts(result)
        except Exception as exc:
            raise InvocationFailed(context.invocation_id, user_traceback(exc)) from exc

    async def _queue(self, function: FunctionSpec, call: QueueCall) -> str:
        context = InvocationContext(function.name, self.app_dir, call.trace_context)
        message = QueueMessage(id=call.id, body=call.body, dequeue_count=call.dequeue_count,
                               expiration_time=call.expires_on, insertion_time=call.inserted_on,
                               time_next_visible=call.next_visible_on,
                               pop_receipt=call.pop_receipt)
        try:
            await self.invoke(function, message, context)
        except Exception as exc:
            raise InvocationFailed(context.invocation_id, user_traceback(exc)) from exc
        return context.invocation_id

    async def _timer(self, function: FunctionSpec, call: TimerCall) -> str:
        context = InvocationContext(function.name, self.app_dir, call.trace_context)
        # What the worker's TimerRequestConverter makes of the host's TimerInfo.
        info = json.loads(call.timer_info())
        request = TimerRequest(past_due=info["IsPastDue"], schedule_status=info["ScheduleStatus"],
                               schedule=info["Schedule"])
        try:
            await self.invoke(function, request, context)
        except Exception as exc:
            raise InvocationFailed(context.invocation_id, user_traceback(exc)) from exc
        return context.invocation_id

    async def invoke(self, spec: FunctionSpec, trigger_value: Any,
                     context: InvocationContext) -> Any:
        assert spec.user_function is not None
        kwargs: dict[str, Any] = {spec.binding_name: trigger_value}
        if spec.wants_context:
            kwargs["context"] = context
        if spec.is_async:
            return await spec.user_function(**kwargs)
        call = functools.partial(_run_sync, spec.user_function, kwargs, context)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def response_parts(result: Any) -> HttpResult:
    """Status, headers and body of what the function returned (as the worker encodes it)."""
    if isinstance(result, func.HttpResponse):
        headers = [(k, v) for k, v in result.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")]
        if not any(k.lower() == "content-type" for k, _ in headers):
            mimetype = result.mimetype
            content_type = (f"{mimetype}; charset={result.charset}"
                            if mimetype.startswith("text/") else mimetype)
            headers.append(("content-type", content_type))
        return result.status_code, headers, result.get_body() or b""
    if isinstance(result, str):
        return 200, [("content-type", "text/plain; charset=utf-8")], result.encode("utf-8")
    # The worker encodes only these two (azure.functions' HttpResponseConverter): None, bytes or
    # anything else fails the invocation there, so it fails here too (500).
    raise TypeError(f"an HTTP function returned {type(result).__name__}, "
                    "expected func.HttpResponse or str (the Python worker cannot encode it)")


def _run_sync(function: Callable[..., Any], kwargs: dict[str, Any], context: InvocationContext) -> Any:
    # The worker sets this so that logging from user threads can name the invocation.
    context.thread_local_storage.invocation_id = context.invocation_id
    return function(**kwargs)


def user_traceback(exc: BaseException) -> str:
    """The exception's traceback from the first frame that is not the host's own code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_HOST_CODE):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)).rstrip()
