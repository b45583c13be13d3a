"""``python -m devhost --app-dir DIR``: serve a v2-model function app locally.

Prints ``DEVHOST READY http://127.0.0.1:PORT`` on stdout once HTTP listens and the queue
pollers and timers run; everything else goes to stderr. SIGTERM/SIGINT stop it gracefully:
queue messages being processed and timer functions running are waited for (up to
``--shutdown-timeout``; a second signal stops waiting). The exit status is 1 when invocations
had to be abandoned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn

from . import worker_library
from .app_index import (
    AppIndex,
    AppIndexError,
    index_app,
    index_worker_metadata,
    load_function_app,
    prepare_import,
)
from .http_server import AdminFunctions, AuthKeys, FunctionsHttpApp
from .invocation import BuiltinInvoker, Invoker, default_thread_count
from .local_settings import ConfigError, config_get, load_host_json, load_local_settings
from .queue_runner import QueueOptions, QueueRunner
from .routing import RouteTable, RouteTemplateError
from .timer_runner import TimerRunner

log = logging.getLogger("devhost")
GRACE_SECONDS = 5.0  # for HTTP requests in flight at shutdown
SHUTDOWN_TIMEOUT_SECONDS = 600.0  # for queue messages and timer runs in flight at shutdown
_HOST_LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG,
                    "information": logging.INFO, "warning": logging.WARNING,
                    "error": logging.ERROR, "critical": logging.CRITICAL,
                    "none": logging.CRITICAL + 1}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__.split("\n")[0])
    parser.add_argument("--app-dir", required=True, type=Path,
                        help="directory holding function_app.py and host.json")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings file (default: APP_DIR/local.settings.json if present)")
    parser.add_argument("--no-auth", action="store_true",
                        help="do not check function/admin keys (Core Tools' behaviour)")
    parser.add_argument("--no-queues", action="store_true", help="do not run queue triggers")
    parser.add_argument("--queue-lease-seconds", type=int, default=600,
                        help="visibility timeout while a message is processed (renewed at half)")
    parser.add_argument("--shutdown-timeout", type=float, default=SHUTDOWN_TIMEOUT_SECONDS,
                        help="on SIGTERM/SIGINT, how long to wait for queue messages being "
                             "processed and timer functions running before abandoning them "
                             "(exit status 1)")
    parser.add_argument("--worker", choices=("auto", "library", "builtin"), default="auto",
                        help="who loads and invokes the functions: Microsoft's worker library "
                             "(azure-functions-runtime, Python 3.13+), devhost's own code "
                             "(builtin), or the library when it can be loaded (auto)")
    parser.add_argument("--verbose", action="store_true", help="log every invocation")
    return parser.parse_args(argv)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: devhost stops HTTP and queues together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _configure_logging(host: dict, verbose: bool) -> None:
    # Everything logged in this process is, to the real host, the "Function" category.
    levels = config_get(host, "logging", "logLevel", default={}) or {}
    level = str(config_get(levels, "Function", default=None)
                or config_get(levels, "default", default="information"))
    logging.basicConfig(stream=sys.stderr, level=_HOST_LOG_LEVELS.get(level.lower(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    # The storage SDK logs every request at INFO: far too chatty for a dev console.
    logging.getLogger("azure").setLevel(logging.WARNING)


def http_parser() -> str:
    """uvicorn's HTTP/1.1 implementation: httptools (llhttp, in C) when installed, else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def server_config(app: FunctionsHttpApp, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                          access_log=False, server_header=False, http=http_parser(),
                          timeout_graceful_shutdown=int(GRACE_SECONDS))


async def load_app(args: argparse.Namespace, app_dir: Path,
                   host: dict) -> tuple[Invoker, AppIndex]:
    """Index the app and load its functions with Microsoft's worker library when it can be
    loaded (``--worker auto``/``library``), else with devhost's own code."""
    resolve_queues = not args.no_queues
    if args.worker != "builtin":
        try:
            worker = worker_library.create(app_dir)
        except worker_library.WorkerUnavailable as exc:
            if args.worker == "library":
                raise AppIndexError(f"--worker library: {exc}") from None
            log.info("Microsoft's worker library is not used: %s", exc)
        else:
            prepare_import(app_dir)
            index = index_worker_metadata(await worker.start(), app_dir, os.environ, host_config=host,
                                          resolve_queues=resolve_queues)
            await worker.load([*index.http, *index.queues, *index.timers])
            return worker, index
    index = index_app(load_function_app(app_dir), app_dir, os.environ, host_config=host,
                      resolve_queues=resolve_queues)
    return BuiltinInvoker(default_thread_count(), str(app_dir)), index


def _build_routes(index: AppIndex, prefix: str) -> RouteTable:
    routes: RouteTable = RouteTable(prefix)
    for function in index.http:
        routes.add(function.route, function.methods, function)
    return routes


def _describe(index: AppIndex, url: str, prefix: str) -> None:
    for f in index.http:
        path = "/".join(p for p in (prefix.strip("/"), f.route.strip("/")) if p)
        methods = ",".join(sorted(f.methods)) if f.methods else "any"
        log.info("%s: [%s] %s/%s (auth: %s)", f.name, methods, url, path, f.auth_level)
    for q in index.queues:
        log.info("%s: queueTrigger on %s", q.name, q.queue_name)
    for t in index.timers:
        log.info("%s: timerTrigger (%s)%s", t.name, t.schedule,
                 ", run on startup" if t.run_on_startup else "")


async def serve(args: argparse.Namespace) -> int:
    app_dir = args.app_dir.resolve()
    settings = args.settings or app_dir / "local.settings.json"
    load_local_settings(settings, os.environ, required=args.settings is not None)
    host = load_host_json(app_dir)
    _configure_logging(host, args.verbose)
    invoker, index = await load_app(args, app_dir, host)
    prefix = config_get(host, "extensions", "http", "routePrefix", default="api")
    prefix = "api" if prefix is None else str(prefix)
    auth = AuthKeys(enabled=not args.no_auth,
                    function_key=os.environ.get("DEVHOST_FUNCTION_KEY") or None,
                    master_key=os.environ.get("DEVHOST_MASTER_KEY") or None)
    warning = auth.missing_keys_warning(f.auth_level for f in index.http)
    if warning:
        log.warning(warning)
    timers = (TimerRunner.from_settings(index.timers, invoker, os.environ, app_dir)
              if index.timers else None)
    admin = AdminFunctions(
        names=frozenset(f.name.casefold() for f in [*index.http, *index.queues, *index.timers]),
        run_timer=timers.trigger if timers else lambda name: False)
    http_app = FunctionsHttpApp(_build_routes(index, prefix), invoker, auth, str(app_dir), admin)

    # proto=IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections; without it
    # every response waits ~40 ms for a delayed ACK (uvicorn writes head and body separately).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    server = _Server(server_config(http_app, port))

    stop, abandon = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, abandon)

    runner = None
    if index.queues and not args.no_queues:
        runner = QueueRunner(index.queues, QueueOptions.from_host_json(host), invoker, os.environ,
                             app_dir=str(app_dir), lease_seconds=args.queue_lease_seconds)
        await runner.start()
    if timers is not None:
        await timers.start()
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            log.error("the HTTP server failed to start")
            return 1
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    log.info("functions loaded and invoked by %s", invoker.description)
    protocol = server.config.http_protocol_class
    log.info("HTTP/1.1 parser: %s (%s.%s)", server.config.http, protocol.__module__,
             protocol.__qualname__)
    _describe(index, url, prefix)
    print(f"DEVHOST READY {url}", flush=True)

    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    server.should_exit = True
    deadline = loop.time() + GRACE_SECONDS
    queues_done = (runner.stop(args.shutdown_timeout, abandon) if runner
                   else asyncio.sleep(0, True))
    timers_done = (timers.stop(args.shutdown_timeout, abandon) if timers
                   else asyncio.sleep(0, True))
    queues_finished, timers_finished, _ = await asyncio.gather(queues_done, timers_done, serving)
    finished = queues_finished and timers_finished
    if finished and not await invoker.wait_idle(max(0.0, deadline - loop.time())):
        log.error("SHUTDOWN INCOMPLETE: HTTP requests still running after %.0f s; abandoning "
                  "them", GRACE_SECONDS)
        finished = False
    invoker.shutdown()
    if finished:
        return 0
    # Their pool threads would otherwise hold up interpreter exit until they end.
    watchdog = threading.Timer(0.5, os._exit, args=(1,))
    watchdog.daemon = True
    watchdog.start()
    return 1


def _on_signal(stop: asyncio.Event, abandon: asyncio.Event) -> None:
    """The first signal stops gracefully; a second one stops waiting for invocations."""
    if stop.is_set():
        log.warning("second stop signal: no longer waiting for invocations in flight")
        abandon.set()
    stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        code = asyncio.run(serve(args))
    except (AppIndexError, ConfigError, RouteTemplateError) as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
