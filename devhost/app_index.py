"""Import a v2-model function app and describe its functions, as the worker's indexing does.

Nothing here knows a particular app: functions come from ``FunctionApp.get_functions()``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import azure.functions as func
from azure.functions.decorators.http import HttpOutput, HttpTrigger
from azure.functions.decorators.queue import QueueTrigger

log = logging.getLogger("devhost")
_EXPRESSION = re.compile(r"%([^%]+)%")
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")
_AUTH_LEVELS = {"anonymous", "function", "admin"}


class AppIndexError(RuntimeError):
    """The app cannot be loaded or one of its functions cannot be served."""


@dataclass(frozen=True)
class FunctionSpec:
    """What every invocation needs: the callable, how to pass the trigger, async or not."""

    name: str
    binding_name: str
    user_function: Callable[..., Any]
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
class AppIndex:
    app_dir: Path
    http: list[HttpFunction]
    queues: list[QueueFunction]


def load_function_app(app_dir: Path, module: str = "function_app") -> func.FunctionApp:
    """Import ``function_app.py`` from ``app_dir`` and return its ``FunctionApp`` instance."""
    if not (app_dir / f"{module}.py").exists():
        raise AppIndexError(f"{app_dir} has no {module}.py")
    path = str(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    loaded = sys.modules.get(module)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() != (app_dir / f"{module}.py").resolve():
        # Another app's function_app is already imported (several apps in one test process).
        del sys.modules[module]
    mod = importlib.import_module(module)
    apps = [v for v in vars(mod).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        raise AppIndexError(f"{module}.py must define exactly one FunctionApp (found {len(apps)})")
    return apps[0]


def index_app(app: func.FunctionRegister, app_dir: Path, env: Mapping[str, str],
              *, host_config: Mapping[str, Any] | None = None,
              resolve_queues: bool = True) -> AppIndex:
    """Describe the app's HTTP and queue functions. Functions disabled by the
    ``AzureWebJobs.<name>.Disabled`` setting or left out of host.json ``functions`` are skipped;
    other trigger types are skipped with a warning. Queue names are resolved from ``env``
    only when ``resolve_queues``."""
    only = (host_config or {}).get("functions")
    allowed = None if only is None else {str(n).casefold() for n in only}
    http: list[HttpFunction] = []
    queues: list[QueueFunction] = []
    for function in app.get_functions():
        name = function.get_function_name() or function.get_user_function().__name__
        if _disabled(name, env) or (allowed is not None and name.casefold() not in allowed):
            log.info("function %s is disabled", name)
            continue
        trigger = function.get_trigger()
        common = _common(name, function, trigger)
        if isinstance(trigger, HttpTrigger):
            http.append(HttpFunction(**common, route=trigger.route or name,
                                     methods=_methods(trigger.methods),
                                     auth_level=_auth_level(name, trigger.auth_level)))
        elif isinstance(trigger, QueueTrigger):
            queue = trigger.queue_name
            if resolve_queues:
                queue = normalize_queue_name(
                    resolve_expressions(queue, env, what=f"function {name} queue name"),
                    what=f"function {name}")
            queues.append(QueueFunction(**common, queue_name=queue,
                                        connection=trigger.connection or "AzureWebJobsStorage"))
        else:
            log.warning("function %s: %s triggers are not run by devhost; skipped",
                        name, type(trigger).__name__)
            continue
        _warn_unsupported_bindings(name, function, trigger)
    return AppIndex(app_dir=app_dir, http=http, queues=queues)


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


def _common(name: str, function: func.Function, trigger: Any) -> dict[str, Any]:
    user_function = function.get_user_function()
    params = inspect.signature(user_function).parameters
    return dict(name=name, binding_name=trigger.name, user_function=user_function,
                wants_context="context" in params and trigger.name != "context",
                is_async=inspect.iscoroutinefunction(user_function))


def _methods(methods: Any) -> frozenset[str] | None:
    if not methods:
        return None
    return frozenset(str(getattr(m, "value", m)).upper() for m in methods)


def _auth_level(name: str, level: Any) -> str:
    text = str(getattr(level, "value", level) or "function").lower()
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


def _warn_unsupported_bindings(name: str, function: func.Function, trigger: Any) -> None:
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        if isinstance(binding, HttpOutput) and binding.name == "$return":
            continue
        log.warning("function %s: binding %r (%s) is not supported by devhost",
                    name, binding.name, type(binding).__name__)
