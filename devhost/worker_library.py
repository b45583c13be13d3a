"""Microsoft's Python worker, ``azure-functions-runtime``, driven in-process the way the host
drives it.

From Python 3.13 on, the worker that runs an app's functions in Azure is this library: a thin
gRPC proxy that ships with the Functions host receives the host's FunctionRpc messages and hands
each one, with the protobuf message classes, to the library's ``worker_init_request``,
``functions_metadata_request``, ``function_load_request`` and ``invocation_request``. devhost
plays the host and the proxy: it sends the same messages, in-process instead of over gRPC, so
indexing, the load-time checks, the conversion of binding data into ``func.HttpRequest``,
``func.QueueMessage`` and ``func.TimerRequest``, the ``context`` argument, the thread pool and
the encoding of results are the worker's own code.

The message classes: the library builds and reads FunctionRpc messages but does not ship them,
and no package publishes them on their own. The ``azure-functions-runtime-v1`` wheels (the same
repository's library for the v1 programming model) carry them as test fixtures, generated from
FunctionRpc.proto (``tests/protos/FunctionRpc_pb2.py`` and the two files it imports). devhost
loads those three modules from that installed distribution under a private name; it never
imports the distribution's top-level ``tests`` directory as such.

Either missing (Python before 3.13, or the packages not installed) makes :func:`create` raise
:class:`WorkerUnavailable`, and devhost invokes the functions with its own code instead.
"""

from __future__ import annotations

import importlib
import sys
import types
import uuid
from collections.abc import Iterable
from email.utils import formatdate
from pathlib import Path
from typing import Any

from .app_index import AppIndexError, FunctionSpec
from .invocation import (
    HttpCall,
    HttpResult,
    InvocationFailed,
    Invoker,
    QueueCall,
    TimerCall,
    dotnet_datetimeoffset,
)

RUNTIME_DISTRIBUTION = "azure-functions-runtime"
PROTOS_DISTRIBUTION = "azure-functions-runtime-v1"
PROTOS_FILE = "tests/protos/FunctionRpc_pb2.py"  # inside PROTOS_DISTRIBUTION
PROTOS_PACKAGE = "_devhost_functionrpc"  # the private name the generated modules load under
RPC_PACKAGE = "AzureFunctionsRpcMessages"  # FunctionRpc.proto's package
# Every message class the library or devhost builds or reads.
REQUIRED_MESSAGES = (
    "StreamingMessage", "WorkerInitRequest", "WorkerInitResponse", "WorkerMetadata",
    "FunctionsMetadataRequest", "FunctionMetadataResponse", "RpcFunctionMetadata",
    "FunctionLoadRequest", "FunctionLoadResponse", "InvocationRequest", "InvocationResponse",
    "FunctionEnvironmentReloadResponse", "StatusResult", "RpcException", "BindingInfo",
    "RpcRetryOptions", "ParameterBinding", "TypedData", "RpcHttp", "RpcHttpCookie",
    "RpcTraceContext", "NullableString", "NullableBool", "NullableDouble", "NullableTimestamp")
_SKIPPED_RESPONSE_HEADERS = ("content-length", "transfer-encoding")


class WorkerUnavailable(RuntimeError):
    """The worker library or its message classes cannot be loaded (the reason is the text)."""


def load_runtime() -> types.ModuleType:
    try:
        return importlib.import_module("azure_functions_runtime")
    except ImportError as exc:
        raise WorkerUnavailable(
            f"{RUNTIME_DISTRIBUTION} is not installed (it needs Python 3.13 or later; this is "
            f"{sys.version_info.major}.{sys.version_info.minor}): {exc}") from None


def load_protos() -> tuple[types.SimpleNamespace, str]:
    """The FunctionRpc message classes as a namespace (what the proxy worker passes the library
    as ``protos``), and the version of the distribution they come from."""
    from importlib import metadata

    try:
        dist = metadata.distribution(PROTOS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise WorkerUnavailable(f"{PROTOS_DISTRIBUTION} (the FunctionRpc message classes) is "
                                "not installed") from None
    found = next((f for f in dist.files or () if f.as_posix() == PROTOS_FILE), None)
    if found is None:
        raise WorkerUnavailable(f"{PROTOS_DISTRIBUTION} {dist.version} has no {PROTOS_FILE}")
    root = Path(str(dist.locate_file(found))).parent
    if PROTOS_PACKAGE not in sys.modules:
        for name, path in ((PROTOS_PACKAGE, root), (f"{PROTOS_PACKAGE}.shared", root / "shared"),
                           (f"{PROTOS_PACKAGE}.identity", root / "identity")):
            package = types.ModuleType(name)
            package.__path__ = [str(path)]  # a package of exactly these generated modules
            sys.modules[name] = package
    try:
        modules = [importlib.import_module(f"{PROTOS_PACKAGE}.FunctionRpc_pb2"),
                   importlib.import_module(f"{PROTOS_PACKAGE}.shared.NullableTypes_pb2")]
    except Exception as exc:  # protobuf missing, or a runtime that refuses this generated code
        raise WorkerUnavailable(f"the FunctionRpc messages of {PROTOS_DISTRIBUTION} "
                                f"{dist.version} cannot be loaded: {type(exc).__name__}: "
                                f"{exc}") from None
    if modules[0].DESCRIPTOR.package != RPC_PACKAGE:
        raise WorkerUnavailable(f"{PROTOS_FILE} of {PROTOS_DISTRIBUTION} {dist.version} is not "
                                "FunctionRpc.proto")
    messages = {name: getattr(module, name) for module in modules
                for name in module.DESCRIPTOR.message_types_by_name}
    missing = [name for name in REQUIRED_MESSAGES if name not in messages]
    if missing:
        raise WorkerUnavailable(f"the FunctionRpc messages of {PROTOS_DISTRIBUTION} "
                                f"{dist.version} lack {', '.join(missing)}")
    return types.SimpleNamespace(**messages), dist.version


def create(app_dir: Path) -> LibraryInvoker:
    """A worker for the app in ``app_dir``; :class:`WorkerUnavailable` when it cannot be had."""
    runtime = load_runtime()
    protos, protos_version = load_protos()
    return LibraryInvoker(runtime, protos, protos_version, app_dir)


class _WorkerRequest:
    """What the proxy worker hands the library: a name, the StreamingMessage, properties."""

    __slots__ = ("name", "request", "properties")

    def __init__(self, name: str, request: Any, properties: dict[str, Any] | None = None) -> None:
        self.name, self.request, self.properties = name, request, properties or {}


class LibraryInvoker(Invoker):
    """Invokes the app's functions through ``azure_functions_runtime``: :meth:`start` indexes the
    app (WorkerInitRequest, FunctionsMetadataRequest), :meth:`load` loads the functions devhost
    serves (FunctionLoadRequest), then each invocation is an InvocationRequest."""

    def __init__(self, runtime: types.ModuleType, protos: types.SimpleNamespace,
                 protos_version: str, app_dir: Path) -> None:
        super().__init__()
        self.runtime, self.protos, self.app_dir = runtime, protos, app_dir
        version = getattr(getattr(runtime, "version", None), "VERSION", "?")
        self.description = (f"Microsoft's Python worker, {RUNTIME_DISTRIBUTION} {version} "
                            f"(FunctionRpc messages from {PROTOS_DISTRIBUTION} {protos_version})")
        self._metadata: dict[str, Any] = {}
        self._success = protos.StatusResult.Success

    async def start(self) -> list[Any]:
        """Index the app as the host has the worker do it; the functions' ``RpcFunctionMetadata``.
        An indexing failure (an import error, the worker's checks of the functions' signatures)
        is an :class:`AppIndexError` carrying the worker's message and stack trace."""
        P, app_dir = self.protos, str(self.app_dir)
        assert self.runtime.__file__ is not None  # a package imported from its folder
        self.runtime.start_threadpool_executor()
        init = await self.runtime.worker_init_request(_WorkerRequest(
            "WorkerInitRequest",
            P.StreamingMessage(worker_init_request=P.WorkerInitRequest(
                host_version="devhost", function_app_directory=app_dir,
                worker_directory=str(Path(self.runtime.__file__).parent))),
            {"protos": P, "host": "127.0.0.1"}))
        self._check(init.result, f"the worker could not index {app_dir}")
        if "HttpUri" in init.capabilities:
            raise AppIndexError("the app uses HTTP streaming (azurefunctions-extensions-http-"
                                "fastapi), which devhost does not serve")
        response = await self.runtime.functions_metadata_request(_WorkerRequest(
            "WorkerMetadataRequest",
            P.StreamingMessage(functions_metadata_request=P.FunctionsMetadataRequest(
                function_app_directory=app_dir))))
        self._check(response.result, f"the worker could not index {app_dir}")
        results = list(response.function_metadata_results)
        self._metadata = {m.function_id: m for m in results}
        return results

    async def load(self, functions: Iterable[FunctionSpec]) -> None:
        """FunctionLoadRequest for each function devhost serves (the host loads only those)."""
        P = self.protos
        for function in functions:
            assert function.function_id is not None  # indexed by the worker (start)
            response = await self.runtime.function_load_request(_WorkerRequest(
                "FunctionLoadRequest",
                P.StreamingMessage(function_load_request=P.FunctionLoadRequest(
                    function_id=function.function_id,
                    metadata=self._metadata[function.function_id]))))
            self._check(response.result, f"the worker could not load function {function.name}")

    def _check(self, result: Any, what: str) -> None:
        if result.status != self._success:
            raise AppIndexError(f"{what}: {result.exception.message}\n"
                                f"{result.exception.stack_trace}".rstrip())

    async def _http(self, function: FunctionSpec, call: HttpCall) -> tuple[str, HttpResult]:
        P = self.protos
        http = P.RpcHttp(method=call.method, url=call.url, headers=call.headers,
                         query=call.query, params=call.route_params)
        if call.body:  # the host sends a body only when there is one, as bytes (RawHttpBodyBytes)
            http.body.bytes = call.body
        invocation_id = str(uuid.uuid4())
        response = await self._invoke(P.InvocationRequest(
            invocation_id=invocation_id, function_id=function.function_id,
            input_data=[P.ParameterBinding(name=function.binding_name,
                                           data=P.TypedData(http=http))],
            trace_context=self._trace_context(call.trace_context)))
        self._raise_on_failure(invocation_id, response)
        return invocation_id, self._http_result(invocation_id, response.return_value)

    async def _queue(self, function: FunctionSpec, call: QueueCall) -> str:
        P = self.protos
        # The message as the host binds it for a worker: its text (the Storage extension's
        # BinaryData.ToString(), UTF-8) and the trigger's binding data as trigger metadata,
        # each value converted as the host's ToRpc does (strings as strings, numbers and
        # DateTimeOffsets as JSON).
        text = call.body.decode("utf-8", "replace")
        metadata = {"QueueTrigger": P.TypedData(string=text),
                    "Id": P.TypedData(string=call.id),
                    "DequeueCount": P.TypedData(json=str(call.dequeue_count)),
                    "PopReceipt": P.TypedData(string=call.pop_receipt)}
        for key, value in (("InsertionTime", call.inserted_on),
                           ("ExpirationTime", call.expires_on),
                           ("NextVisibleTime", call.next_visible_on)):
            if value is not None:
                metadata[key] = P.TypedData(json=f'"{dotnet_datetimeoffset(value)}"')
        invocation_id = str(uuid.uuid4())
        response = await self._invoke(P.InvocationRequest(
            invocation_id=invocation_id, function_id=function.function_id,
            input_data=[P.ParameterBinding(name=function.binding_name,
                                           data=P.TypedData(string=text))],
            trigger_metadata=metadata, trace_context=self._trace_context(call.trace_context)))
        self._raise_on_failure(invocation_id, response)
        return invocation_id

    async def _timer(self, function: FunctionSpec, call: TimerCall) -> str:
        P = self.protos
        # The host's TimerInfo as JSON, which the worker's TimerRequestConverter decodes; the
        # host's trigger metadata for timers (a "TimerTrigger" time string and "sys") is not
        # sent: the converter reads none of it.
        invocation_id = str(uuid.uuid4())
        response = await self._invoke(P.InvocationRequest(
            invocation_id=invocation_id, function_id=function.function_id,
            input_data=[P.ParameterBinding(name=function.binding_name,
                                           data=P.TypedData(json=call.timer_info()))],
            trace_context=self._trace_context(call.trace_context)))
        self._raise_on_failure(invocation_id, response)
        return invocation_id

    async def _invoke(self, request: Any) -> Any:
        return await self.runtime.invocation_request(_WorkerRequest(
            "FunctionInvocationRequest", self.protos.StreamingMessage(invocation_request=request)))

    def _trace_context(self, trace: Any) -> Any:
        return self.protos.RpcTraceContext(trace_parent=trace.trace_parent,
                                           trace_state=trace.trace_state,
                                           attributes=trace.attributes)

    def _raise_on_failure(self, invocation_id: str, response: Any) -> None:
        if response.result.status != self._success:
            exception = response.result.exception
            raise InvocationFailed(invocation_id, f"Result: Failure\nException: "
                                                  f"{exception.message}\nStack: "
                                                  f"{exception.stack_trace}".rstrip())

    def _http_result(self, invocation_id: str, value: Any) -> HttpResult:
        """Status, headers and body of the worker's return value for an HTTP function."""
        kind = value.WhichOneof("data")
        if kind == "string":  # a function that returned a str
            return 200, [("content-type", "text/plain; charset=utf-8")], value.string.encode()
        if kind != "http":
            raise InvocationFailed(invocation_id, f"Result: Failure\nException: the worker "
                                                  f"returned {kind or 'nothing'} for an HTTP "
                                                  "function")
        http = value.http
        headers = [(k, v) for k, v in http.headers.items()
                   if k.lower() not in _SKIPPED_RESPONSE_HEADERS]
        headers += [("set-cookie", set_cookie(cookie, self.protos)) for cookie in http.cookies]
        body = http.body
        kind = body.WhichOneof("data")
        content = (body.bytes if kind == "bytes" else body.string.encode() if kind == "string"
                   else b"")
        return int(http.status_code or 200), headers, content

    def shutdown(self) -> None:
        pool = self.runtime.get_threadpool_executor()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def set_cookie(cookie: Any, protos: types.SimpleNamespace) -> str:
    """A ``Set-Cookie`` value from the worker's ``RpcHttpCookie`` (azure.functions turns a
    response's set-cookie headers into these; the host writes them back as headers). Empty
    attributes are left out, as ASP.NET Core's SetCookieHeaderValue leaves them out."""
    parts = [f"{cookie.name}={cookie.value}"]
    if cookie.HasField("expires"):
        parts.append("expires=" + formatdate(cookie.expires.value.seconds, usegmt=True))
    if cookie.HasField("max_age"):
        parts.append(f"max-age={int(cookie.max_age.value)}")
    if cookie.domain.value:
        parts.append(f"domain={cookie.domain.value}")
    if cookie.path.value:
        parts.append(f"path={cookie.path.value}")
    if cookie.HasField("secure") and cookie.secure.value:
        parts.append("secure")
    same_site = protos.RpcHttpCookie.SameSite
    parts += {same_site.Lax: ["samesite=lax"], same_site.Strict: ["samesite=strict"],
              same_site.ExplicitNone: ["samesite=none"]}.get(cookie.same_site, [])
    if cookie.HasField("http_only") and cookie.http_only.value:
        parts.append("httponly")
    return "; ".join(parts)
