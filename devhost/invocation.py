"""Calling user functions as the Python worker does: keyword arguments by binding name, a
``context`` argument when asked for, sync functions in a thread pool, async ones awaited."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import re
import secrets
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import azure.functions as func
from azure.functions import _abc

from .app_index import FunctionSpec

log = logging.getLogger("devhost")

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
    def from_headers(cls, headers: Mapping[str, str], function_name: str) -> "TraceContext":
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
    exception = None


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

    @property
    def thread_local_storage(self) -> threading.local:
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


class Invoker:
    """Runs invocations; counts those in flight so shutdown can wait for them."""

    def __init__(self, threads: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="devhost-fn")
        self.active = 0

    async def invoke(self, spec: FunctionSpec, trigger_value: Any,
                     context: InvocationContext) -> Any:
        kwargs: dict[str, Any] = {spec.binding_name: trigger_value}
        if spec.wants_context:
            kwargs["context"] = context
        self.active += 1
        try:
            if spec.is_async:
                return await spec.user_function(**kwargs)
            call = functools.partial(_run_sync, spec, kwargs, context)
            return await asyncio.get_running_loop().run_in_executor(self.executor, call)
        finally:
            self.active -= 1

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for in-flight invocations; True when none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.active and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not self.active

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _run_sync(spec: FunctionSpec, kwargs: dict[str, Any], context: InvocationContext) -> Any:
    # The worker sets this so that logging from user threads can name the invocation.
    context.thread_local_storage.invocation_id = context.invocation_id
    return spec.user_function(**kwargs)


def user_traceback(exc: BaseException) -> str:
    """The exception's traceback from the first frame that is not the host's own code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_HOST_CODE):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)).rstrip()
