"""Describe a v2-model function app's functions as the host sees them after the worker's indexing.

Nothing here knows a particular app: functions come from the worker's function metadata
(``RpcFunctionMetadata``, with Microsoft's worker library) or from ``FunctionApp.get_functions()``
(devhost's own code); either way each function is its name and raw bindings, the JSON the
worker sends the host.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func

from .ncrontab import IntervalSchedule, Schedule, ScheduleError, parse_schedule

log = logging.getLogger("devhost")
_EXPRESSION = re.compile(r"%([^%]+)%")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")
_AUTH_LEVELS = {"anonymous", "function", "admin"}


class AppIndexError(RuntimeError):
    """The app cannot be loaded or one of its functions cannot be served."""


@dataclass(frozen=True)
class FunctionSpec:
    """What every invocation needs. With Microsoft's worker library (``function_id`` set) the
    worker calls the function; devhost's own invocation code uses the callable and flags."""

    name: str
    binding_name: str
    function_id: str | None  # the worker's id of the function; None with devhost's own code
    user_function: Callable[..., Any] | None
    wants_context: bool
    is_async: bool


@dataclass(frozen=True)
class HttpFunction(FunctionSpec):
    route: str
    methods: frozenset[str] | None  # None: any method
    auth_level: str  # anonymous | function | admin


@dataclass(frozen=True)
class QueueFunction(FunctionSpec):
    queue_name: str  # binding expressions resolved
    connection: str  # name of the app setting holding the connection


@dataclass(frozen=True)
class TimerFunction(FunctionSpec):
    schedule: Schedule  # binding expressions resolved
    run_on_startup: bool
    # As the host decides it: the binding's useMonitor (default true), turned off for a
    # schedule that fires more than once a minute.
    use_monitor: bool


@dataclass(frozen=True)
class AppIndex:
    app_dir: Path
    http: list[HttpFunction]
    queues: list[QueueFunction]
    timers: list[TimerFunction] = field(default_factory=list)


def prepare_import(app_dir: Path, module: str = "function_app") -> None:
    """Make ``module`` importable from ``app_dir`` (the worker imports it by name)."""
    if not (app_dir / f"{module}.py").exists():
        raise AppIndexError(f"{app_dir} has no {module}.py")
    path = str(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    loaded = sys.modules.get(module)
    if (loaded is not None
            and Path(getattr(loaded, "__file__", "")).resolve() != (app_dir / f"{module}.py").resolve()):
        # Another app's function_app is already imported (several apps in one test process).
        del sys.modules[module]


def load_function_app(app_dir: Path, module: str = "function_app") -> func.FunctionRegister:
    """Import ``function_app.py`` from ``app_dir`` and return its ``FunctionApp`` instance."""
    prepare_import(app_dir, module)
    mod = importlib.import_module(module)
    apps = [v for v in vars(mod).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        raise AppIndexError(f"{module}.py must define exactly one FunctionApp (found {len(apps)})")
    return apps[0]


def index_app(app: func.FunctionRegister, app_dir: Path, env: Mapping[str, str],
              *, host_config: Mapping[str, Any] | None = None,
              resolve_queues: bool = True) -> AppIndex:
    """Describe the app's HTTP, queue and timer functions from ``app.get_functions()`` (for
    devhost's own invocation code). See :func:`index_functions`."""
    described = []
    for function in app.get_functions():
        user_function = function.get_user_function()
        name = function.get_function_name() or user_function.__name__
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        described.append((name, bindings, None, user_function))
    return index_functions(described, app_dir, env, host_config=host_config,
                           resolve_queues=resolve_queues)


def index_worker_metadata(metadata: Iterable[Any], app_dir: Path, env: Mapping[str, str],
                          *, host_config: Mapping[str, Any] | None = None,
                          resolve_queues: bool = True) -> AppIndex:
    """Describe the app's functions from the worker's ``FunctionMetadataResponse`` results
    (``RpcFunctionMetadata``: name, function_id, raw_bindings), as the host reads them."""
    described = [(m.name, [json.loads(raw) for raw in m.raw_bindings], m.function_id, None)
                 for m in metadata]
    return index_functions(described, app_dir, env, host_config=host_config,
                           resolve_queues=resolve_queues)


def index_functions(functions: Iterable[tuple[str, list[dict[str, Any]], str | None,
                                              Callable[..., Any] | None]],
                    app_dir: Path, env: Mapping[str, str],
                    *, host_config: Mapping[str, Any] | None = None,
                    resolve_queues: bool = True) -> AppIndex:
    """Describe HTTP, queue and timer functions from their names and raw bindings (the JSON the
    worker sends the host). Functions disabled by the ``AzureWebJobs.<name>.Disabled`` setting
    or left out of host.json ``functions`` are skipped; other trigger types are skipped with a
    warning. Queue names are resolved from ``env`` only when ``resolve_queues``; timer
    schedules always are, and are checked as the host checks them."""
    only = (host_config or {}).get("functions")
    allowed = None if only is None else {str(n).casefold() for n in only}
    http: list[HttpFunction] = []
    queues: list[QueueFunction] = []
    timers: list[TimerFunction] = []
    for name, bindings, function_id, user_function in functions:
        if _disabled(name, env) or (allowed is not None and name.casefold() not in allowed):
            log.info("function %s is disabled", name)
            continue
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        if trigger is None:
            log.warning("function %s has no trigger; skipped", name)
            continue
        common = _common(name, trigger, function_id, user_function)
        kind = trigger["type"]
        if kind == "httpTrigger":
            http.append(HttpFunction(**common, route=trigger.get("route") or name,
                                     methods=_methods(trigger.get("methods")),
                                     auth_level=_auth_level(name, trigger.get("authLevel"))))
        elif kind == "queueTrigger":
            queue = str(trigger.get("queueName", ""))
            if resolve_queues:
                queue = normalize_queue_name(
                    resolve_expressions(queue, env, what=f"function {name} queue name"),
                    what=f"function {name}")
            queues.append(QueueFunction(**common, queue_name=queue,
                                        connection=trigger.get("connection") or "AzureWebJobsStorage"))
        elif kind == "timerTrigger":
            schedule = _schedule(name, trigger, env)
            use_monitor = (_flag(trigger.get("useMonitor"), default=True)
                           and not schedule.runs_more_than_once_a_minute(datetime.now(UTC)))
            timers.append(TimerFunction(**common, schedule=schedule, use_monitor=use_monitor,
                                        run_on_startup=_flag(trigger.get("runOnStartup"),
                                                             default=False)))
        else:
            log.warning("function %s: %s triggers are not run by devhost; skipped", name, kind)
            continue
        _warn_unsupported_bindings(name, bindings, trigger)
    return AppIndex(app_dir=app_dir, http=http, queues=queues, timers=timers)


def resolve_expressions(text: str, env: Mapping[str, str], *, what: str) -> str:
    """Replace each ``%SETTING%`` with the setting's value; an unset setting is an error."""
    def value(match: re.Match[str]) -> str:
        setting = match.group(1)
        if setting not in env:
            raise AppIndexError(f"{what} {text!r} refers to app setting {setting!r}, "
                                "which is not set (add it to local.settings.json Values)")
        return env[setting]
    return _EXPRESSION.sub(value, text)


def normalize_queue_name(name: str, *, what: str) -> str:
    """The trigger's queue name as the host uses it: lowercased, then checked against Azure's
    rules (3-63 characters; lowercase letters, digits and single dashes; no dash first or last)."""
    lowered = name.lower()
    if not is_valid_queue_name(lowered):
        raise AppIndexError(f"{what}: {name!r} is not a valid queue name (3-63 characters: "
                            "lowercase letters, digits and single dashes, starting and ending "
                            "with a letter or digit)")
    return lowered


def is_valid_queue_name(name: str) -> bool:
    return 3 <= len(name) <= 63 and bool(_QUEUE_NAME.match(name))


def _common(name: str, trigger: Mapping[str, Any], function_id: str | None,
            user_function: Callable[..., Any] | None) -> dict[str, Any]:
    binding_name = str(trigger.get("name", ""))
    wants_context = is_async = False
    if user_function is not None:
        params = inspect.signature(user_function).parameters
        wants_context = "context" in params and binding_name != "context"
        is_async = inspect.iscoroutinefunction(user_function)
    return dict(name=name, binding_name=binding_name, function_id=function_id,
                user_function=user_function, wants_context=wants_context, is_async=is_async)


def _schedule(name: str, trigger: Mapping[str, Any], env: Mapping[str, str]) -> Schedule:
    """The trigger's schedule, its ``%SETTING%`` expressions resolved. A TimeSpan schedule is
    refused on the Consumption plan (``WEBSITE_SKU=Dynamic``), with the host's message."""
    text = resolve_expressions(str(trigger.get("schedule") or ""), env,
                               what=f"function {name} schedule")
    try:
        schedule = parse_schedule(text)
    except ScheduleError as exc:
        raise AppIndexError(f"function {name}: {exc}") from None
    if isinstance(schedule, IntervalSchedule) and _setting(env, "WEBSITE_SKU") == "dynamic":
        raise AppIndexError(f"function {name}: '{text}' is not a valid CRON expression. (A "
                            "TimeSpan schedule runs only on a dedicated plan; WEBSITE_SKU is "
                            "Dynamic.)")
    return schedule


def _flag(value: Any, *, default: bool) -> bool:
    """A boolean binding property as the host reads it (JSON true/false, or "true"/"false")."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _setting(env: Mapping[str, str], name: str) -> str:
    wanted = name.casefold()
    return next((v for k, v in env.items() if k.casefold() == wanted), "").strip().lower()


def _methods(methods: Any) -> frozenset[str] | None:
    if not methods:
        return None
    return frozenset(str(m).upper() for m in methods)


def _auth_level(name: str, level: Any) -> str:
    text = str(level or "function").lower()
    if text not in _AUTH_LEVELS:
        raise AppIndexError(f"function {name}: unknown auth level {text!r}")
    return text


def _disabled(name: str, env: Mapping[str, str]) -> bool:
    """``AzureWebJobs.<name>.Disabled`` (or ``AzureWebJobs_<name>_Disabled``) is 1 or true;
    setting names are case-insensitive, as .NET configuration keys are."""
    wanted = {f"AzureWebJobs.{name}.Disabled".casefold(),
              f"AzureWebJobs_{name}_Disabled".casefold()}
    return any(key.casefold() in wanted and value.strip().lower() in {"1", "true"}
               for key, value in env.items())


def _warn_unsupported_bindings(name: str, bindings: list[dict[str, Any]],
                               trigger: Mapping[str, Any]) -> None:
    for binding in bindings:
        if binding is trigger:
            continue
        if binding.get("type") == "http" and binding.get("name") == "$return":
            continue
        log.warning("function %s: binding %r (%s) is not supported by devhost",
                    name, binding.get("name"), binding.get("type"))
