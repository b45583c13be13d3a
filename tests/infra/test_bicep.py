"""The Bicep in infra/ stands up what the app needs, identity only: checked offline.

Every ``.bicep`` file is parsed with pycep (the Bicep parser checkov uses); the assertions read
the parsed trees. ``infra/main.bicep`` declares modules (``infra/app/*.bicep``): :class:`Scope`
follows each ``module`` declaration to its file, so a check finds a resource, variable or
parameter in whichever file holds it, and the tests check that the modules line up (the
parameters passed, the outputs read, ``existing`` references naming declared resources).

pycep checks syntax, not semantics (types, property names, API versions): the ``bicep build``
test does that where a Bicep CLI is installed, and ``az deployment group what-if`` against a
subscription is the final word (infra/README.md).

pycep's tree is lossy in one way that matters here: a string literal and a reference to a
variable/parameter both come out as a plain string (``'models'`` and ``modelContainerName``
alike), so :func:`resolve` looks names up in the file's variables and parameters (a module's
parameter: the value its parent passes; main.bicep's: its default) and in modules' outputs, and
references to resources stay expressions such as ``storage.properties.primaryEndpoints.blob``.
A module refers to a resource declared elsewhere through an ``existing`` declaration with the
same symbolic name, type and API version (asserted), so such an expression means the same
resource in every file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from shared.settings import SPEC, TELEMETRY_SPEC, Settings, resolve_connection, telemetry_settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "app"
QUERIES = INFRA / "queries"
CHECKOV_CONFIG = INFRA / ".checkov.yaml"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken.bicep"

# Built-in role definition ids (the same in every tenant; see the Azure built-in roles reference).
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

APP = "appIdentity.properties.principalId"  # the app's user-assigned identity
USER = "principalId"  # the optional deploying user (parameter)

# Every data-plane right granted: (scope, principal, role). infra/app/rbac.bicep justifies each.
EXPECTED_ROLE_ASSIGNMENTS = {
    ("storage", APP, BLOB_DATA_OWNER),  # Functions host storage; also models, batch, logs
    ("storage", APP, QUEUE_DATA_CONTRIBUTOR),  # queue trigger, poison queue, job results
    ("storage", APP, TABLE_DATA_CONTRIBUTOR),  # host diagnostic events
    ("appInsights", APP, MONITORING_METRICS_PUBLISHER),  # Entra ID telemetry ingestion
    ("storage", USER, BLOB_DATA_CONTRIBUTOR),  # upload models, router config, batch inputs
    ("storage", USER, QUEUE_DATA_CONTRIBUTOR),  # `scorefn jobs submit` / `jobs wait`
}

# Settings the code reads that the template leaves unset on purpose (the code default applies).
INTENTIONALLY_UNSET = {
    # Inline router config; mutually exclusive with ROUTER_CONFIG_BLOB, which the template sets.
    "ROUTER_CONFIG",
    # Keeps metrics in memory for `GET /api/metrics/latency`: local runs and the demo only; the
    # code ignores it when exporting to Application Insights.
    "TELEMETRY_LOCAL_READER",
    # Compiled trees: on by default (served when an artifact was uploaded); compiling on the
    # instance is an opt-in fallback (off, empty, is the safe default), and its cache directory
    # and timeout only matter when it is on.
    "COMPILED_TREES", "COMPILE_ON_INSTANCE", "COMPILED_CACHE_DIR", "COMPILED_TIMEOUT_SECONDS",
    # Drift monitoring: on by default, and its tuning (flush interval, pending rows, window, PSI
    # threshold, fewest rows) is the code's documented defaults (docs/settings.md); change them
    # with appSettingOverrides. MONITOR_CONTAINER and MONITOR_SCHEDULE are set (below).
    "MONITOR_ENABLED", "MONITOR_FLUSH_SECONDS", "MONITOR_MAX_PENDING_ROWS", "MONITOR_WINDOW_HOURS",
    "MONITOR_PSI_THRESHOLD", "MONITOR_MIN_ROWS",
}
# Never left to a default: the queue trigger binds %SCORE_QUEUE_NAME%, and the names must match
# the containers and queues the template creates.
MUST_BE_SET = {"MODEL_STORAGE_CONNECTION", "MODEL_CONTAINER", "BATCH_CONTAINER",
               "SCORE_QUEUE_NAME", "RESULTS_QUEUE_NAME", "CHUNK_QUEUE_NAME", "ROUTER_CONFIG_BLOB",
               "PREDICTION_LOG_CONNECTION", "PREDICTION_LOG_CONTAINER", "OUTCOME_LOG_CONTAINER",
               "MONITOR_CONTAINER"}

# The one app setting allowed to hold `InstrumentationKey=` at run time: the Application Insights
# connection string. Its ikey is an identifier, not a secret (Microsoft: "Ikey unique identifiers
# aren't security tokens or security keys"), and with DisableLocalAuth (asserted below) ingestion
# needs an Entra ID token of the app identity; the exporter needs it to know where to send.
ALLOWED_SECRET_LOOKING = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "appInsights.properties.ConnectionString"}

SECRET_MARKERS = ("AccountKey=", "InstrumentationKey=", "SharedAccessSignature=", "SharedAccessKey=",
                  "sig=", "Password=")
# Functions and properties that hand out keys or secrets; none may appear in any template.
KEY_CALL = re.compile(r"\blist[A-Za-z]*\s*\(|\.listKeys\b|primaryKey|secondaryKey|primaryMasterKey")


# -- parsing -----------------------------------------------------------------------------------


class BicepSyntaxError(Exception):
    """A .bicep file the parser rejects."""


@lru_cache(maxsize=1)
def _parser():
    from pycep import BicepParser

    return BicepParser()


@cache
def parse(path: Path) -> dict[str, Any]:
    from lark.exceptions import LarkError

    try:
        return _parser().parse(file_path=path)
    except (LarkError, ValueError) as exc:  # pycep raises ValueError for rejected content
        raise BicepSyntaxError(f"{path.relative_to(ROOT)}: {exc}") from None


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def code_of(path: Path) -> str:
    """A .bicep file without its comments (strings kept: '//' inside a URL is not a comment)."""
    text, out, i = path.read_text(), [], 0
    while i < len(text):
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
        elif text[i] == "'":
            end = i + 1
            while end < len(text) and text[end] != "'":
                end += 2 if text[end] == "\\" else 1
            out.append(text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class Scope:
    """One .bicep file as deployed: main.bicep, or a module with the parameters its parent passes.

    ``module`` declarations are followed to their files (local paths only; registry modules need
    the network), recursively, so ``Scope(MAIN).walk()`` is every file of the deployment.
    """

    def __init__(self, path: Path, parent: Scope | None = None, symbol: str = "",
                 declaration: dict[str, Any] | None = None) -> None:
        self.path, self.parent, self.symbol, self.declaration = path, parent, symbol, declaration
        self.tree = parse(path)
        self.modules: dict[str, Scope] = {}
        for name, module in self.tree.get("modules", {}).items():
            assert module["type"] == "local", f"{self.label}: module {name} is not a local file"
            file = (path.parent / module["detail"]["path"]).resolve()
            assert file.is_file(), f"{self.label}: module {name}: no file {file}"
            assert INFRA in file.parents, f"{self.label}: module {name} outside infra/"
            assert file not in self.ancestry(), f"{self.label}: module {name} includes itself"
            self.modules[name] = Scope(file, self, name, module)

    def ancestry(self) -> list[Path]:
        return [self.path] + (self.parent.ancestry() if self.parent else [])

    def walk(self) -> Iterator[Scope]:
        yield self
        for module in self.modules.values():
            yield from module.walk()

    @property
    def label(self) -> str:
        return str(self.path.relative_to(INFRA))

    @property
    def passed(self) -> dict[str, Any]:
        """The parameters the parent passes (``params:`` of the module declaration)."""
        return body(self.declaration).get("params", {}) if self.declaration else {}

    @property
    def parameters(self) -> dict[str, Any]:
        return self.tree.get("parameters", {})

    @property
    def variables(self) -> dict[str, Any]:
        return self.tree.get("variables", {})

    @property
    def resources(self) -> dict[str, Any]:
        return self.tree.get("resources", {})

    @property
    def outputs(self) -> dict[str, Any]:
        return self.tree.get("outputs", {})

    def __repr__(self) -> str:
        return f"Scope({self.label})"


class Declared(NamedTuple):
    """A resource the deployment creates (not an ``existing`` reference), and the file holding it."""

    name: str
    scope: Scope
    resource: dict[str, Any]


class Deployment:
    def __init__(self) -> None:
        self.root = Scope(MAIN)
        self.scopes = list(self.root.walk())
        self.declared: dict[str, Declared] = {}
        for scope in self.scopes:
            for name, resource in scope.resources.items():
                if not resource["existing"]:
                    assert name not in self.declared, \
                        f"resource {name} declared in {self.declared[name].scope.label} and {scope.label}"
                    self.declared[name] = Declared(name, scope, resource)


@pytest.fixture(scope="module")
def dep() -> Deployment:
    return Deployment()


def resolve(value: Any, scope: Scope, depth: int = 0) -> Any:
    """A variable or parameter reference replaced by its value, recursively.

    A module's parameter takes the value its parent passes (resolved in the parent); main.bicep's
    takes its default. ``module.outputs.NAME`` is the module's output, ``resource.name`` the
    resource's name, both resolved where they are declared.
    """
    if depth > 30 or not isinstance(value, str):
        return value
    head, _, rest = value.partition(".")
    parts = rest.split(".") if rest else []
    if head in scope.variables:
        found = scope.variables[head]["value"]
    elif head in scope.parameters and not rest:
        if scope.parent is not None and head in scope.passed:
            return resolve(scope.passed[head], scope.parent, depth + 1)
        return resolve(scope.parameters[head]["default"], scope, depth + 1)
    elif head in scope.modules and len(parts) == 2 and parts[0] == "outputs":
        module = scope.modules[head]
        if parts[1] not in module.outputs:
            return value
        return resolve(module.outputs[parts[1]]["value"], module, depth + 1)
    elif head in scope.resources and rest == "name":
        return resolve(body(scope.resources[head])["name"], scope, depth + 1)
    else:
        return value
    for part in parts:
        if not isinstance(found, dict) or part not in found:
            return value
        found = found[part]
    return resolve(found, scope, depth + 1)


def lift(value: Any, scope: Scope) -> tuple[Any, Scope]:
    """A module parameter followed up to the expression that sets it (in main.bicep if passed on)."""
    while isinstance(value, str) and value in scope.parameters and value in scope.passed:
        value, scope = scope.passed[value], scope.parent
    return value, scope


def referenced(dep: Deployment, scope: Scope, symbol: str) -> Declared:
    """The resource a symbolic name stands for in a file: declared there, or by ``existing``."""
    resource = scope.resources[symbol]
    if not resource["existing"]:
        return dep.declared[symbol]
    name = resolve(body(resource)["name"], scope)
    matches = [d for d in dep.declared.values() if d.resource["type"] == resource["type"]
               and resolve(body(d)["name"], d.scope) == name]
    assert len(matches) == 1, f"{scope.label}: existing {symbol} ({name}) matches {matches}"
    return matches[0]


def body(resource: dict[str, Any] | Declared) -> dict[str, Any]:
    """The resource (or module) declaration's body (inside ``if (...)`` when conditional)."""
    if isinstance(resource, Declared):
        resource = resource.resource
    config = resource["config"]
    return config["config"] if "condition" in config and "config" in config else config


def condition(resource: dict[str, Any] | Declared) -> Any:
    if isinstance(resource, Declared):
        resource = resource.resource
    config = resource["config"]
    return config.get("condition") if "config" in config else None


def resources_of(dep: Deployment, type_: str) -> dict[str, Declared]:
    """The resources of a type the deployment declares, in whichever file (no ``existing``)."""
    return {name: d for name, d in dep.declared.items() if d.resource["type"] == type_}


def function_app(dep: Deployment) -> Declared:
    (site,) = resources_of(dep, "Microsoft.Web/sites").values()
    return site


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value: literals, references and interpolations."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def identifiers(value: Any) -> set[str]:
    """The names an expression starts from (``storage`` in ``storage.outputs.name``)."""
    return {m.group(1) for text in strings(value)
            for m in re.finditer(r"(?<![\w.'])([A-Za-z_]\w*)", text)}


def app_settings(dep: Deployment) -> dict[str, Any]:
    """The function app's settings: the object its siteConfig.appSettings loop runs over."""
    site = function_app(dep)
    scope = site.scope
    loop = body(site)["properties"]["siteConfig"]["appSettings"]
    assert loop["loop_type"]["type"] == "object"
    assert loop["config"] == {"name": "setting.key", "value": "setting.value"}
    source = scope.variables[loop["loop_type"]["detail"]["object_name"]]["value"]
    if "function" in source:
        assert source["function"]["type"] == "union"
        parts = list(source["function"]["parameters"].values())
    else:
        parts = [source]
    merged: dict[str, Any] = {}
    for part in parts:  # later objects win, as in Bicep's union()
        resolved = resolve(part, scope)
        assert isinstance(resolved, dict), f"app settings part {part!r} is not an object"
        merged.update({key: resolve(value, scope) for key, value in resolved.items()})
    return merged


# -- syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path):
    assert parse(path)["resources"] or path != MAIN


def test_infra_has_the_azd_layout():
    assert MAIN in bicep_files()
    assert (INFRA / "main.parameters.json").is_file()
    assert (ROOT / "azure.yaml").is_file()


def test_a_syntax_error_fails_the_parse():
    with pytest.raises(BicepSyntaxError, match="broken.bicep"):
        parse(BROKEN)


# -- modules -------------------------------------------------------------------------------------


def _waits_for(scope: Scope) -> set[str]:
    """What a module's deployment waits for: what its parameters reference, and its dependsOn."""
    declaration = body(scope.declaration)
    return identifiers(declaration.get("params", {})) | set(declaration.get("dependsOn", []))


def test_every_bicep_file_is_main_or_a_module_main_deploys(dep):
    # checkov scans every .bicep file in infra/: each one is part of the deployment, once.
    assert sorted(scope.path for scope in dep.scopes) == bicep_files()
    assert [scope.path.parent for scope in dep.scopes[1:]] == [MODULES] * (len(dep.scopes) - 1)
    assert {scope.symbol for scope in dep.scopes[1:]} >= {"storage", "monitoring", "rbac", "functionApp"}
    names = [resolve(body(scope.declaration)["name"], dep.root) for scope in dep.scopes[1:]]
    assert len(set(names)) == len(names), names  # deployment names: one record per module
    # Environments share a resource group (README): a module's deployment record is theirs.
    assert all("${resourceToken}" in name for name in names), names


def test_modules_are_passed_exactly_the_parameters_they_declare(dep):
    for scope in dep.scopes[1:]:
        where = f"{scope.parent.label}: module {scope.symbol} ({scope.label})"
        declared = scope.parameters
        assert sorted(set(scope.passed) - set(declared)) == [], f"{where}: not a param of the module"
        required = sorted(name for name, param in declared.items()
                          if param["default"] is None and name not in scope.passed)
        assert required == [], f"{where}: parameters without a default not passed"
        for name in scope.passed:
            decorators = {d["type"]: d["argument"] for d in declared[name]["decorators"]}
            value, parent = lift(name, scope)
            if isinstance(value, str) and value in parent.parameters:
                source = parent.parameters[value]
                # Passed on from a parameter: the same type, and no value the module refuses.
                assert source["type"] == declared[name]["type"], f"{where}: {name} type"
                if "allowed" in decorators:
                    allowed = {d["type"]: d["argument"] for d in source["decorators"]}.get("allowed")
                    assert allowed and set(allowed) <= set(decorators["allowed"]), f"{where}: {name}"
            elif "allowed" in decorators:
                assert resolve(value, parent) in decorators["allowed"], f"{where}: {name}"


def test_module_outputs_that_are_read_exist(dep):
    read = set()
    for scope in dep.scopes:
        text = code_of(scope.path)
        assert not re.search(r"\.outputs\s*\[", text), f"{scope.label}: index outputs by name"
        for match in re.finditer(r"(?<![\w.])([A-Za-z_]\w*)\.outputs\.([A-Za-z_]\w*)", text):
            module, output = match.groups()
            assert module in scope.modules, f"{scope.label}: {match.group(0)}: no module {module}"
            assert output in scope.modules[module].outputs, f"{scope.label}: {match.group(0)}"
            read.add((scope.modules[module].label, output))
    assert ("app/storage.bicep", "name") in read and ("app/function-app.bicep", "name") in read


def test_every_parameter_and_variable_is_used(dep):
    # What the Bicep linter's no-unused-params / no-unused-vars report (approximated: a use is the
    # name outside its declaration, string literals and object keys; interpolations count).
    for scope in dep.scopes:
        text = re.sub(r"'(?:\\.|[^'\\])*'",
                      lambda m: " ".join(re.findall(r"\$\{([^}]*)\}", m.group(0))), code_of(scope.path))
        for kind, names in (("param", scope.parameters), ("var", scope.variables)):
            for name in names:
                # `key:` is an object key, unless it ends a loop header: [for x in NAME: ...]
                uses = re.findall(rf"(?<![\w.]){re.escape(name)}\b(?!\s*:(?!:))"
                                  rf"|\bin\s+{re.escape(name)}(?=\s*:)", text)
                assert len(uses) >= 2, f"{scope.label}: {kind} {name} is never used"


def test_existing_references_name_resources_the_deployment_declares(dep):
    # A module reads a resource another file declares through `existing` with the same symbolic
    # name, type and API version: `storage.properties.primaryEndpoints.blob` is the same account
    # (and the same properties) in every file, and the deployed name is the declared one.
    seen = set()
    for scope in dep.scopes:
        for name, resource in scope.resources.items():
            if not resource["existing"]:
                continue
            target = referenced(dep, scope, name)
            assert target.scope is not scope, f"{scope.label}: {name} is declared in the same file"
            assert target.name == name, f"{scope.label}: existing {name} is {target.name} elsewhere"
            assert resource["api_version"] == target.resource["api_version"], f"{scope.label}: {name}"
            assert set(body(resource)) == {"name"}, f"{scope.label}: {name}: this resource group only"
            seen.add(name)
    assert {"storage", "appInsights", "appIdentity"} <= seen


def test_modules_deploy_after_the_resources_they_read(dep):
    for scope in dep.scopes[1:]:
        assert scope.parent is dep.root, f"{scope.label}: modules are declared in main.bicep only"
        waits_for = _waits_for(scope)
        for name, resource in scope.resources.items():
            if resource["existing"]:
                target = referenced(dep, scope, name)
                needed = target.name if target.scope is dep.root else target.scope.symbol
                assert needed in waits_for, f"module {scope.symbol} reads {name} before {needed} is done"


def test_the_function_app_starts_after_its_role_assignments_containers_and_queues(dep):
    # The host reads its storage, queues and deployment package with the identity from its first
    # start: the rights, the package container and the queues its triggers bind exist first.
    site = function_app(dep)
    needed = list(resources_of(dep, "Microsoft.Authorization/roleAssignments").values())
    needed += [dep.declared[name] for name in ("deploymentContainer", "scoreQueue", "chunkQueue",
                                               "chunkPoisonQueue")]
    for resource in needed:
        if resource.scope is site.scope:
            assert resource.name in body(site).get("dependsOn", []), resource.name
        else:
            assert site.scope.parent is dep.root and resource.scope.parent in (None, dep.root)
            wanted = resource.name if resource.scope is dep.root else resource.scope.symbol
            assert wanted in _waits_for(site.scope), f"the function app does not wait for {wanted}"


# -- resources -----------------------------------------------------------------------------------


def test_every_resource_the_app_needs_is_declared(dep):
    types = {d.resource["type"] for d in dep.declared.values()}
    assert {
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.Storage/storageAccounts/queueServices/queues",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.Insights/workbooks",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.Insights/scheduledQueryRules",
    } <= types
    for scope in dep.scopes:
        assert scope.tree["globals"]["scope"]["value"] == "resourceGroup", scope.label
        for name, module in scope.tree.get("modules", {}).items():
            # Into main's resource group, always: a condition would make all its resources optional.
            assert "scope" not in body(module) and condition(module) is None, f"module {name}"
    modules = [line for path in bicep_files() for line in path.read_text().splitlines()
               if re.match(r"\s*module\s", line)]
    assert not [m for m in modules if re.search(r"'(br|ts)[:/]", m)], "registry modules need network"


def test_every_resource_is_in_mains_region_with_mains_tags(dep):
    # azd finds an environment's resources by the azd-env-name tag in allTags.
    assert "'azd-env-name'" in dep.root.variables["allTags"]["value"]["function"]["parameters"]["arg_2"]
    located = 0
    for name, resource in dep.declared.items():
        spec = body(resource)
        if "location" in spec:
            assert lift(spec["location"], resource.scope) == ("location", dep.root), name
            tags = spec["tags"]
            if isinstance(tags, dict):  # union(tags, {...}): the resource's own tags added
                assert tags["function"]["type"] == "union", name
                tags = tags["function"]["parameters"]["arg_1"]
            assert lift(tags, resource.scope) == ("allTags", dep.root), name
            located += 1
    # identity, storage, workspace, components, workbook, the two drift alerts, plan, site
    assert located == 9


def test_storage_is_entra_id_only(dep):
    (storage,) = resources_of(dep, "Microsoft.Storage/storageAccounts").values()
    props = body(storage)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    for container in resources_of(dep, "Microsoft.Storage/storageAccounts/blobServices/containers").values():
        assert body(container)["properties"]["publicAccess"] == "None"


def test_containers_and_queues_match_the_app_settings(dep):
    containers = {resolve(body(r)["name"], r.scope) for r in
                  resources_of(dep, "Microsoft.Storage/storageAccounts/blobServices/containers").values()}
    queues = {resolve(body(r)["name"], r.scope) for r in
              resources_of(dep, "Microsoft.Storage/storageAccounts/queueServices/queues").values()}
    settings = app_settings(dep)
    assert {"models", "batch", "predictions", "outcomes", "monitoring"} <= containers
    assert [c for c in containers if c.startswith("app-package-")], containers
    assert settings["MODEL_CONTAINER"] == "models" and settings["BATCH_CONTAINER"] == "batch"
    # The host moves a message to <queue>-poison after maxDequeueCount deliveries.
    assert resolve("poisonQueueName", dep.root) == "${scoreQueueName}-poison"
    assert resolve("chunkPoisonQueueName", dep.root) == "${chunkQueueName}-poison"
    queues = {q.replace("${scoreQueueName}", settings["SCORE_QUEUE_NAME"])
              .replace("${chunkQueueName}", settings["CHUNK_QUEUE_NAME"]) for q in queues}
    assert queues == {settings["SCORE_QUEUE_NAME"], settings["RESULTS_QUEUE_NAME"],
                      f'{settings["SCORE_QUEUE_NAME"]}-poison', settings["CHUNK_QUEUE_NAME"],
                      f'{settings["CHUNK_QUEUE_NAME"]}-poison'}
    assert queues == {"score-requests", "score-results", "score-requests-poison", "score-chunks",
                      "score-chunks-poison"}
    assert settings["PREDICTION_LOG_CONTAINER"] == "predictions"
    assert settings["OUTCOME_LOG_CONTAINER"] == "outcomes"
    assert settings["MONITOR_CONTAINER"] == "monitoring"
    # The router config blob lives in the models container, under config/.
    assert settings["ROUTER_CONFIG_BLOB"] == "config/router.json"


def test_the_monitoring_container_is_the_one_monitor_container_names_and_the_app_writes_it(dep):
    # Drift monitoring writes served counts and summaries to MONITOR_CONTAINER through
    # PREDICTION_LOG_CONNECTION: the container must be the one the template declares, in the
    # account that connection reaches, with the app's identity allowed to create and write it.
    settings = app_settings(dep)
    container = dep.declared["monitoringContainer"]
    spec = body(container)
    assert resolve(spec["name"], container.scope) == settings["MONITOR_CONTAINER"] == "monitoring"
    assert spec["properties"]["publicAccess"] == "None"
    # One name for both: main's variable, passed to the storage module and to the app's module.
    site_scope = function_app(dep).scope
    assert lift(spec["name"], container.scope) == ("monitoringContainerName", dep.root)
    assert site_scope.variables["storageSettings"]["value"]["MONITOR_CONTAINER"] == \
        "monitoringContainerName"
    assert lift("monitoringContainerName", site_scope) == ("monitoringContainerName", dep.root)
    names = [resolve(body(r)["name"], r.scope) for r in
             resources_of(dep, "Microsoft.Storage/storageAccounts/blobServices/containers").values()]
    assert len(set(names)) == len(names), names  # not shared with the logs or batch data
    # In the account of the app's storage connection (the prediction log's: the same one).
    blob_service = dep.declared[spec["parent"]]
    assert blob_service.resource["type"] == "Microsoft.Storage/storageAccounts/blobServices"
    account = dep.declared[body(blob_service)["parent"]]
    assert account == dep.declared["storage"] == referenced(dep, site_scope, "storage")
    assert settings["PREDICTION_LOG_CONNECTION"] == "AzureWebJobsStorage"
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "storage.properties.primaryEndpoints.blob"
    # Rights are per account: the app identity's Blob Data Owner there covers creating the
    # container when missing and writing its blobs (no per-container assignment to add).
    owners = []
    for assignment in resources_of(dep, "Microsoft.Authorization/roleAssignments").values():
        props = body(assignment)["properties"]
        role = resolve(props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"],
                       assignment.scope)
        if props["principalId"] == APP and role == BLOB_DATA_OWNER:
            owners.append(referenced(dep, assignment.scope, body(assignment)["scope"]))
    assert owners == [account]
    env = {name: _placeholder(value) for name, value in settings.items()}
    assert Settings.from_env(env).monitor_container == "monitoring"


def test_function_app_runs_python_311_on_flex_consumption_with_the_identity(dep):
    (plan,) = resources_of(dep, "Microsoft.Web/serverfarms").values()
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(plan)["properties"]["reserved"] is True
    declared = function_app(dep)
    scope, site = declared.scope, body(declared)
    assert site["properties"]["serverFarmId"] == "plan.id" and referenced(dep, scope, "plan") == plan
    # In the site's file, these names are the declared identity and storage account.
    assert referenced(dep, scope, "appIdentity") == dep.declared["appIdentity"]
    assert referenced(dep, scope, "storage") == dep.declared["storage"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${appIdentity.id}'"]
    props = site["properties"]
    assert props["httpsOnly"] is True and props["siteConfig"]["minTlsVersion"] == "1.2"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.13"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    assert lift("deploymentContainerName", scope) == ("deploymentContainerName", dep.root)
    assert resolve("deploymentContainerName", scope) == resolve(
        body(dep.declared["deploymentContainer"])["name"], dep.declared["deploymentContainer"].scope)
    assert storage["authentication"] == {"type": "UserAssignedIdentity",
                                         "userAssignedIdentityResourceId": "appIdentity.id"}
    scale = config["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    always_ready = scale["alwaysReady"]["operator"]["operands"]
    assert always_ready["true_value"] == [{"name": "http", "instanceCount": "alwaysReadyHttpInstances"}]
    assert always_ready["false_value"] == []
    # Main's parameters, passed on as they are.
    for name in ("maximumInstanceCount", "instanceMemoryMB", "alwaysReadyHttpInstances"):
        assert lift(name, scope) == (name, dep.root)
    params = dep.root.parameters
    assert params["alwaysReadyHttpInstances"]["default"] == 0
    assert params["instanceMemoryMB"]["default"] in (512, 2048, 4096)
    # Basic-auth publishing is off: deployments authenticate with Entra ID.
    policies = resources_of(dep, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == \
        {"scm": False, "ftp": False}
    assert {body(p)["parent"] for p in policies.values()} == {declared.name}
    assert {p.scope for p in policies.values()} == {scope}


def test_application_insights_takes_entra_id_ingestion_only(dep):
    (insights,) = resources_of(dep, "Microsoft.Insights/components").values()
    props = body(insights)["properties"]
    assert props["DisableLocalAuth"] is True
    assert props["WorkspaceResourceId"] == "logAnalytics.id"
    (workspace,) = resources_of(dep, "Microsoft.OperationalInsights/workspaces").values()
    assert referenced(dep, insights.scope, "logAnalytics") == workspace


# -- app settings ----------------------------------------------------------------------------------


def test_app_settings_cover_every_setting_the_code_reads(dep):
    settings = app_settings(dep)
    read = {spec.env for spec in SPEC.values()} | set(TELEMETRY_SPEC)
    assert MUST_BE_SET <= read and not MUST_BE_SET & INTENTIONALLY_UNSET
    assert INTENTIONALLY_UNSET <= read, "stale entry in INTENTIONALLY_UNSET"
    assert sorted(read - set(settings) - INTENTIONALLY_UNSET) == []
    assert sorted(INTENTIONALLY_UNSET & set(settings)) == []


def test_app_settings_bind_every_setting_the_triggers_use(dep):
    settings = app_settings(dep)
    source = "\n".join(p.read_text() for p in (ROOT / "score_function").glob("*.py"))
    source += (ROOT / "function_app.py").read_text()
    for name in re.findall(r"%([A-Za-z0-9_]+)%", source):
        assert name in settings, f"binding expression %{name}% has no app setting"
    for connection in set(re.findall(r"connection\s*=\s*[\"']([A-Za-z0-9_]+)[\"']", source)):
        assert f"{connection}__blobServiceUri" in settings
        assert f"{connection}__queueServiceUri" in settings
        assert settings[f"{connection}__credential"] == "managedidentity"
        assert settings[f"{connection}__clientId"] == "appIdentity.properties.clientId"
        assert connection not in settings, f"{connection} must not be a connection string"


def test_the_drift_evaluation_schedule_is_bound_from_its_parameter(dep):
    # The timer binds %MONITOR_SCHEDULE%: like ROLLOUT_SCHEDULE, the setting comes from the app
    # module's parameter, among the settings overrides cannot remove.
    scope = function_app(dep).scope
    source = (ROOT / "score_function" / "monitor_timer.py").read_text()
    assert 'schedule="%MONITOR_SCHEDULE%"' in source
    bound = scope.variables["storageSettings"]["value"]
    assert bound["MONITOR_SCHEDULE"] == "monitorSchedule"
    assert bound["ROLLOUT_SCHEDULE"] == "rolloutSchedule"
    param = scope.parameters["monitorSchedule"]
    assert param["type"] == "string"
    assert any(d["type"] == "description" and d["argument"] for d in param["decorators"])
    # The code's default (ten minutes past every hour), in the deployed settings.
    assert param["default"] == SPEC["monitor_schedule"].default == "0 10 * * * *"
    assert app_settings(dep)["MONITOR_SCHEDULE"] == "0 10 * * * *"
    order = list(scope.variables["appSettings"]["value"]["function"]["parameters"].values())
    assert order.index("appSettingOverrides") < order.index("storageSettings")


def test_identity_based_host_storage_and_telemetry(dep):
    settings = app_settings(dep)
    # The settings name resources by symbol: in the app's file, these are the declared ones.
    scope = function_app(dep).scope
    for symbol in ("storage", "appIdentity", "appInsights"):
        assert referenced(dep, scope, symbol) == dep.declared[symbol], symbol
    assert settings["AzureWebJobsStorage__blobServiceUri"] == "storage.properties.primaryEndpoints.blob"
    assert settings["AzureWebJobsStorage__queueServiceUri"] == "storage.properties.primaryEndpoints.queue"
    assert settings["AzureWebJobsStorage__tableServiceUri"] == "storage.properties.primaryEndpoints.table"
    assert settings["MODEL_STORAGE_CONNECTION"] == "AzureWebJobsStorage"
    assert settings["PREDICTION_LOG_CONNECTION"] == "AzureWebJobsStorage"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == \
        "Authorization=AAD;ClientId=${appIdentity.properties.clientId}"
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "false"
    # Flex Consumption takes the runtime from functionAppConfig and does not support these.
    for name in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage",
                 "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
                 "APPINSIGHTS_INSTRUMENTATIONKEY", "DEPLOYMENT_STORAGE_CONNECTION_STRING"):
        assert name not in settings


def _placeholder(value: Any) -> str:
    """The app setting as the running app would see it, expressions replaced by sample values."""
    samples = {
        "storage.properties.primaryEndpoints.blob": "https://stsample.blob.core.windows.net/",
        "storage.properties.primaryEndpoints.queue": "https://stsample.queue.core.windows.net/",
        "storage.properties.primaryEndpoints.table": "https://stsample.table.core.windows.net/",
        "appIdentity.properties.clientId": "00000000-0000-0000-0000-000000000001",
        "appInsights.properties.ConnectionString":
            "InstrumentationKey=00000000-0000-0000-0000-000000000002;"
            "IngestionEndpoint=https://sample.in.applicationinsights.azure.com/",
    }
    if isinstance(value, str):
        if value in samples:
            return samples[value]
        return re.sub(r"\$\{([^}]+)\}", lambda m: samples[m.group(1)], value)
    if isinstance(value, dict) and "function" in value:  # string(...) of a number: a sample size
        return "1024"
    raise AssertionError(f"unexpected app setting value {value!r}")


def test_the_code_accepts_the_deployed_settings(dep):
    env = {name: _placeholder(value) for name, value in app_settings(dep).items()}
    settings = Settings.from_env(env)  # every value parses (or this raises, naming the setting)
    assert settings.score_queue_name == "score-requests" and settings.batch_container == "batch"
    for name in {settings.storage_connection, getattr(settings, "prediction_log_connection",
                                                      settings.storage_connection)}:
        conn = resolve_connection(name, env)
        assert conn.uses_identity and conn.credential == "managedidentity"
        assert conn.blob_service_uri and conn.queue_service_uri
        assert conn.client_id == "00000000-0000-0000-0000-000000000001"
    telemetry = telemetry_settings(env)
    assert telemetry.aad_client_id == "00000000-0000-0000-0000-000000000001"
    assert telemetry.connection_string and not telemetry.worker_managed and not telemetry.log_payloads


def test_overrides_cannot_replace_identity_or_telemetry_settings(dep):
    scope = function_app(dep).scope
    source = scope.variables["appSettings"]["value"]["function"]["parameters"]
    order = list(source.values())
    assert lift("appSettingOverrides", scope) == ("appSettingOverrides", dep.root)
    assert dep.root.parameters["appSettingOverrides"]["default"] == {}
    assert order.index("appSettingOverrides") < order.index("telemetrySettings")
    assert order.index("appSettingOverrides") < order.index("storageSettings")


# -- no secrets ----------------------------------------------------------------------------------


def test_no_keys_connection_strings_or_instrumentation_keys(dep):
    for path in bicep_files():
        text = code_of(path)
        assert not KEY_CALL.search(text), f"{path.name}: a key-listing call or key property"
        for marker in SECRET_MARKERS:
            assert marker not in text, f"{path.name}: {marker}"
    settings = app_settings(dep)
    for name, value in settings.items():
        if name in ALLOWED_SECRET_LOOKING:
            assert value == ALLOWED_SECRET_LOOKING[name]
            continue
        for text in strings(value):
            assert "ConnectionString" not in text and "InstrumentationKey" not in text, name
            assert not re.search(r"(?i)\bkeys?\b|secret|password", text), name
    # The justification of the allowed connection string holds only with local auth disabled.
    (insights,) = resources_of(dep, "Microsoft.Insights/components").values()
    assert body(insights)["properties"]["DisableLocalAuth"] is True
    assert referenced(dep, function_app(dep).scope, "appInsights") == insights
    # Outputs of main.bicep and of every module: a module's outputs are kept in its deployment
    # record, readable by anyone who can read the resource group's deployments.
    for scope in dep.scopes:
        for name, output in scope.outputs.items():
            for text in strings(output["value"]):
                assert not re.search(r"(?i)ConnectionString|InstrumentationKey|\bkeys?\b|secret|password",
                                     text), f"{scope.label}: {name}"
            assert not any(d["type"] == "secure" for d in output["decorators"]), f"{scope.label}: {name}"


def test_outputs_name_what_a_user_needs(dep):
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL", "AZURE_STORAGE_ACCOUNT_NAME",
            "MODEL_CONTAINER", "BATCH_CONTAINER", "PREDICTIONS_CONTAINER", "OUTCOMES_CONTAINER",
            "MONITORING_CONTAINER", "SCORE_QUEUE_NAME", "RESULTS_QUEUE_NAME", "POISON_QUEUE_NAME",
            "APPLICATIONINSIGHTS_NAME"} <= set(dep.root.outputs)


# -- role assignments ------------------------------------------------------------------------------


def test_role_assignments_are_the_documented_least_privilege_set(dep):
    found = set()
    for name, assignment in resources_of(dep, "Microsoft.Authorization/roleAssignments").items():
        where = assignment.scope  # the file declaring it (its module is deployed unconditionally)
        spec = body(assignment)
        props = spec["properties"]
        role_ref = props["roleDefinitionId"]["function"]
        assert role_ref["type"] == "subscription_resource_id", name
        assert role_ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role = resolve(role_ref["parameters"]["resource_name_1"], where)
        principal = props["principalId"]
        assert principal in (APP, USER), f"{name} targets {principal}"
        # APP: the identity main.bicep declares; USER: main's parameter, passed on as it is.
        if principal == APP:
            assert referenced(dep, where, "appIdentity") == dep.declared["appIdentity"], name
        else:
            assert lift(USER, where) == (USER, dep.root), name
            assert lift(props["principalType"], where) == ("principalType", dep.root), name
        scope = spec["scope"]
        # The scope's symbol in this file is the declared resource of that name.
        assert referenced(dep, where, scope).name == scope, name
        # Deterministic, idempotent names: one assignment per (scope, principal, role).
        guid = spec["name"]["function"]
        assert guid["type"] == "guid"
        parts = list(guid["parameters"].values())
        assert parts[0] == f"{scope}.id" and resolve(parts[2], where) == role, name
        assert parts[1] in ("appIdentity.id", USER), name
        if principal == APP:
            assert props["principalType"] == "ServicePrincipal" and condition(assignment) is None
        else:
            # Only when a deploying principal is given: if (!empty(principalId)).
            cond = condition(assignment)["operator"]
            assert cond["type"] == "not"
            assert cond["operands"]["bool_value"]["function"] == \
                {"type": "empty", "parameters": {"item_to_test": "principalId"}}
        found.add((scope, principal, role))
    assert found == EXPECTED_ROLE_ASSIGNMENTS
    assert dep.root.parameters["principalId"]["default"] == ""


# -- parameters, azd -------------------------------------------------------------------------------


def test_parameters_are_described_and_safe_by_default(dep):
    for name, param in dep.root.parameters.items():
        decorators = {d["type"]: d["argument"] for d in param["decorators"]}
        assert decorators.get("description"), f"parameter {name} has no @description"
        if name != "environmentName":
            assert param["default"] is not None, f"parameter {name} has no default"
    for scope in dep.scopes[1:]:  # a module's parameters are passed by main (checked above)
        for name, param in scope.parameters.items():
            assert any(d["type"] == "description" and d["argument"] for d in param["decorators"]), \
                f"{scope.label}: parameter {name} has no @description"
    params = dep.root.parameters
    assert params["maximumInstanceCount"]["default"] <= 100
    assert params["storageSkuName"]["default"] == "Standard_LRS"
    file = json.loads((INFRA / "main.parameters.json").read_text())
    assert set(file["parameters"]) <= set(params)
    assert file["parameters"]["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert file["parameters"]["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    # a CI identity deploying with azd sets AZURE_PRINCIPAL_TYPE; a person gets the default
    assert file["parameters"]["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"


def test_the_site_config_has_nothing_flex_consumption_refuses(dep):
    # Flex rejects siteConfig.ftpsState (400): FTP is off through the publishing policy instead.
    for path in bicep_files():
        assert "ftpsState:" not in path.read_text(), path.name
    text = function_app(dep).scope.path.read_text()
    assert "'ftp'" in text and "allow: false" in text
    scale = {d["type"]: d["argument"] for d in dep.root.parameters["maximumInstanceCount"]["decorators"]}
    assert (scale["min_value"], scale["max_value"]) == (40, 1000)


def test_azure_yaml_deploys_the_repository_root_as_a_python_function_app(dep):
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    ((service_name, service),) = config["services"].items()
    hooks = service.pop("hooks")
    assert service == {"project": ".", "language": "python", "host": "function"}
    for shell in hooks["prepackage"].values():  # the app's bytecode is compiled and shipped
        assert "-m compileall" in shell["run"] and "--invalidation-mode checked-hash" in shell["run"]
        assert " -f " in shell["run"]  # rewrites timestamp bytecode left by local runs
        assert shell["run"].split()[-3:] == ["function_app.py", "score_function", "shared"]
    ignored = (ROOT / ".funcignore").read_text().split()
    assert "__pycache__/" not in ignored and "*.pyc" not in ignored
    site = body(dep.declared["functionApp"])
    assert site["tags"]["function"]["parameters"]["arg_2"] == {"'azd-service-name'": service_name}
    assert (ROOT / "function_app.py").is_file() and (ROOT / "requirements.txt").is_file()


# -- workbook and queries ------------------------------------------------------------------------


def test_the_workbook_loads_every_query_file_once(dep):
    files = sorted(p.name for p in QUERIES.glob("*.kql"))
    assert files
    (workbook,) = resources_of(dep, "Microsoft.Insights/workbooks").values()
    scope = workbook.scope  # loadTextContent paths are relative to the file that loads them
    queries = scope.variables["workbookQueries"]["value"]
    loaded = [(scope.path.parent / v["query"]["function"]["parameters"]["file_path"]).resolve()
              for v in queries]
    assert all(v["query"]["function"]["type"] == "load_text_content" for v in queries)
    assert sorted(loaded) == [QUERIES / name for name in files]
    # One copy of the KQL: none inlined in a template.
    for path in bicep_files():
        assert not re.search(r"\b(customMetrics|requests)\s*\n?\s*\|", path.read_text()), path
    props = body(workbook)["properties"]
    assert props["sourceId"] == "appInsights.id"
    assert referenced(dep, scope, "appInsights") == dep.declared["appInsights"]
    assert props["serializedData"]["function"] == {"type": "string",
                                                   "parameters": {"value_to_convert": "workbookContent"}}


def test_queries_use_the_names_the_app_exports():
    # The attributes are set where the metrics are recorded: scoring, and the drift evaluation.
    telemetry = "\n".join(p.read_text() for package in ("telemetry", "scoring", "monitoring")
                          for p in sorted((ROOT / "shared" / package).glob("*.py")))
    text = "\n".join(p.read_text() for p in QUERIES.glob("*.kql"))
    for metric in set(re.findall(r'"(scorefn\.[a-z_.]+)"', text)):
        if metric in ("scorefn.score", "scorefn.error"):
            continue
        assert f'"{metric}"' in telemetry, f"{metric} is not a metric the app records"
    assert '"scorefn.score"' in telemetry and '"model.version"' in telemetry
    for attribute in set(re.findall(r'customDimensions\["([a-z_.]+)"\]', text)):
        assert f'"{attribute}"' in telemetry or attribute.startswith("scorefn."), attribute
    for path in QUERIES.glob("*.kql"):
        assert path.read_text().startswith("// scorefn:"), f"{path.name}: say what it shows first"


def _drift_alert(dep, symbol: str, name_parameter: str, query_file: str, metric: str):
    """What both drift alerts share: a log alert on Application Insights, hourly over two hours,
    running a workbook query file on a metric the app records, split by endpoint and variant,
    notifying the optional action group. Gives its criterion, the query's columns and its scope."""
    alert = dep.declared[symbol]
    assert alert.resource["type"] == "Microsoft.Insights/scheduledQueryRules"
    scope, spec = alert.scope, body(alert)
    assert condition(alert) is None and spec["kind"] == "LogAlert"
    name = lift(spec["name"], scope)
    assert name == (name_parameter, dep.root) and "${resourceToken}" in resolve(*name)
    props = spec["properties"]
    assert props["enabled"] is True and props["autoMitigate"] is True
    # On Application Insights, whose customMetrics the query reads (the app's telemetry).
    assert props["scopes"] == ["appInsights.id"]
    assert referenced(dep, scope, "appInsights") == dep.declared["appInsights"]
    # Hourly over two hours: the default MONITOR_SCHEDULE evaluates drift once an hour.
    assert (props["evaluationFrequency"], props["windowSize"]) == ("PT1H", "PT2H")
    (criterion,) = props["criteria"]["allOf"]
    assert criterion["failingPeriods"] == {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1}
    # The query: the workbook's query file (one copy of the KQL), on the metric the app records.
    load = criterion["query"]["function"]
    assert load["type"] == "load_text_content"
    path = (scope.path.parent / load["parameters"]["file_path"]).resolve()
    assert path == QUERIES / query_file
    query = path.read_text()
    assert re.search(rf'^\| where name == "{re.escape(metric)}"$', query, re.M)
    assert f'"{metric}"' in (ROOT / "shared" / "telemetry" / "recorder.py").read_text()
    (projected,) = re.findall(r"^\| project (.+)$", query, re.M)
    columns = {column.strip() for column in projected.split(",")}
    # Its maximum over the window, per endpoint and variant (dimensions the query outputs).
    assert criterion["metricMeasureColumn"] in columns and criterion["timeAggregation"] == "Maximum"
    dimensions = {d["name"]: (d["operator"], d["values"]) for d in criterion["dimensions"]}
    assert dimensions == {"endpoint": ("Include", ["*"]), "variant": ("Include", ["*"])}
    assert set(dimensions) | {"timestamp"} <= columns
    # Notifies the optional action group; none by default (the alert shows in the portal).
    actions = props["actions"]["actionGroups"]["operator"]
    assert actions["type"] == "conditional"
    assert actions["operands"]["condition"]["function"] == \
        {"type": "empty", "parameters": {"item_to_test": "driftAlertActionGroupId"}}
    assert actions["operands"]["true_value"] == []
    assert actions["operands"]["false_value"] == ["driftAlertActionGroupId"]
    assert lift("driftAlertActionGroupId", scope) == ("driftAlertActionGroupId", dep.root)
    assert dep.root.parameters["driftAlertActionGroupId"]["default"] == ""
    return criterion, props, scope


def test_the_drift_alerts_are_the_psi_and_the_drifted_features_rules(dep):
    alerts = resources_of(dep, "Microsoft.Insights/scheduledQueryRules")
    assert set(alerts) == {"driftAlert", "driftedFeaturesAlert"}
    names = {resolve(*lift(body(a)["name"], a.scope)) for a in alerts.values()}
    assert len(names) == 2 and any("drifted-features" in n for n in names), names


def test_the_drift_alert_fires_on_the_most_drifted_features_psi_at_the_threshold(dep):
    criterion, props, scope = _drift_alert(dep, "driftAlert", "driftAlertName",
                                           "drift_max_psi.kql", "scorefn.drift.max_psi")
    assert props["severity"] in (2, 3)  # warning / informational: drift is not an outage
    # At or over the threshold, which is main's parameter, a decimal given as a string.
    assert (criterion["metricMeasureColumn"], criterion["operator"]) == ("max_psi", "GreaterThanOrEqual")
    assert criterion["threshold"] == {"function": {"type": "json",
                                                   "parameters": {"arg_1": "driftPsiAlertThreshold"}}}
    assert lift("driftPsiAlertThreshold", scope) == ("driftPsiAlertThreshold", dep.root)
    default = dep.root.parameters["driftPsiAlertThreshold"]["default"]
    assert json.loads(default) == 0.2 == SPEC["monitor_psi_threshold"].default


def test_the_drifted_features_alert_fires_on_any_flagged_feature(dep):
    # PSI against a model's training ranges (no reference profile) is always 0: a unit change or a
    # missing-rate jump there is only in the count of flagged features, so any count over 0 fires.
    criterion, props, _ = _drift_alert(dep, "driftedFeaturesAlert", "driftedFeaturesAlertName",
                                       "drift_drifted_features.kql",
                                       "scorefn.drift.drifted_features")
    assert props["severity"] == 3
    assert (criterion["metricMeasureColumn"], criterion["operator"], criterion["threshold"]) == \
        ("drifted_features", "GreaterThan", 0)


# -- checkov -------------------------------------------------------------------------------------


def _checkov(*args: str) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("checkov")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "checkov.main"]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    # Not --quiet: that leaves the passed checks out of the report, and they show what was scanned.
    run = subprocess.run([*command, *args, "-o", "json", "--skip-download"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep,) = [r for r in reports if r["check_type"] == "bicep"]
    return bicep


# The resources checkov has Bicep checks for: each must be checked in the file declaring it.
CHECKOV_CHECKED = ("Microsoft.Storage/storageAccounts",
                   "Microsoft.Storage/storageAccounts/blobServices/containers", "Microsoft.Web/sites")
SKIPPED = {"CKV_AZURE_35": "storage", "CKV_AZURE_59": "storage", "CKV_AZURE_17": "functionApp"}


def _checked(report: dict[str, Any], key: str) -> set[tuple[str, str, str]]:
    return {(c["check_id"], c["file_path"], c["resource"]) for c in report["results"].get(key, [])}


def test_checkov_passes_with_the_documented_skip_list(dep):
    report = _checkov("--config-file", str(CHECKOV_CONFIG))
    assert report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["resource"], c["check_name"])
              for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["resource_count"] > 0
    # The directory scan reads the modules: every resource of a checked type, in its file.
    passed = {(file, resource) for _, file, resource in _checked(report, "passed_checks")}
    for type_ in CHECKOV_CHECKED:
        for name, resource in resources_of(dep, type_).items():
            assert (f"/{resource.scope.label}", f"{type_}.{name}") in passed, name
    assert not {check for check, _, _ in _checked(report, "passed_checks")} & set(SKIPPED)


def test_checkov_without_the_skip_list_fails_exactly_the_skipped_checks(dep):
    # Each file named (-f): no directory, so infra/.checkov.yaml is not picked up by default.
    report = _checkov(*[arg for path in bicep_files() for arg in ("-f", str(path))],
                      "--framework", "bicep")
    assert report["summary"]["parsing_errors"] == 0
    failed = {(check, Path(file).name, resource)
              for check, file, resource in _checked(report, "failed_checks")}
    expected = set()
    for check, name in SKIPPED.items():
        resource = dep.declared[name]
        expected.add((check, resource.scope.path.name, f"{resource.resource['type']}.{name}"))
    assert failed == expected


def test_checkov_reports_a_file_it_cannot_parse():
    # checkov exits 0 on a file it cannot parse; only the summary says so.
    report = _checkov("-d", str(BROKEN.parent), "--framework", "bicep")
    assert report["summary"]["parsing_errors"] == 1


def test_every_checkov_skip_is_justified():
    lines = CHECKOV_CONFIG.read_text().splitlines()
    start = lines.index("skip-check:")
    comment = False
    skips = []
    for line in lines[start + 1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = True
        elif stripped.startswith("- "):
            assert comment, f"{stripped} has no justification above it"
            skips.append(stripped[2:].split("#")[0].strip())
        elif stripped and not line.startswith(" "):
            break
        else:
            comment = comment and bool(stripped)
    assert skips == ["CKV_AZURE_35", "CKV_AZURE_59", "CKV_AZURE_17"] == list(SKIPPED)


# -- bicep build (where a Bicep CLI is installed) --------------------------------------------------


def _bicep_command() -> list[str] | None:
    if shutil.which("bicep"):
        return ["bicep", "build", "--stdout"]
    if shutil.which("az"):
        try:  # `az bicep` may want to download Bicep; only use an installed one
            probe = subprocess.run(["az", "bicep", "version"], capture_output=True, text=True,
                                   timeout=60)
        except subprocess.TimeoutExpired:
            return None
        if probe.returncode == 0 and "Bicep CLI version" in probe.stdout + probe.stderr:
            return ["az", "bicep", "build", "--stdout", "--file"]
    return None


@pytest.mark.skipif(_bicep_command() is None,
                    reason="no Bicep CLI here (`bicep`, or `az bicep` already installed)")
def test_bicep_build_compiles_main_and_rejects_the_broken_fixture():
    command = _bicep_command()
    built = subprocess.run([*command, str(MAIN)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    template = json.loads(built.stdout)

    def types(template: dict[str, Any]) -> Iterator[str]:  # modules are nested deployments
        resources = template["resources"]
        for resource in resources.values() if isinstance(resources, dict) else resources:
            yield resource["type"]
            if resource["type"] == "Microsoft.Resources/deployments":
                yield from types(resource["properties"]["template"])

    built_types = set(types(template))
    assert {d.resource["type"] for d in Deployment().declared.values()} <= built_types
    assert "Microsoft.Web/sites" in built_types and "Microsoft.Insights/workbooks" in built_types
    broken = subprocess.run([*command, str(BROKEN)], capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0
