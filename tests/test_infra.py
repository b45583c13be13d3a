"""The Bicep in infra/ stands up what the app needs, identity only: checked offline.

Every ``.bicep`` file is parsed with pycep (the Bicep parser checkov uses); the assertions read
the parsed tree. pycep checks syntax, not semantics (types, property names, API versions): the
``bicep build`` test does that where a Bicep CLI is installed, and ``az deployment group
what-if`` against a subscription is the final word (infra/README.md).

pycep's tree is lossy in one way that matters here: a string literal and a reference to a
variable/parameter both come out as a plain string (``'models'`` and ``modelContainerName``
alike), so :func:`resolve` looks names up in the template's variables and parameter defaults,
and references to resources stay expressions such as ``storage.properties.primaryEndpoints.blob``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest

from shared.settings import SPEC, TELEMETRY_SPEC, Settings, resolve_connection, telemetry_settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
QUERIES = INFRA / "queries"
CHECKOV_CONFIG = INFRA / ".checkov.yaml"
BROKEN = Path(__file__).resolve().parent / "fixtures" / "infra" / "broken.bicep"

# Built-in role definition ids (the same in every tenant; see the Azure built-in roles reference).
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

APP = "appIdentity.properties.principalId"  # the app's user-assigned identity
USER = "principalId"  # the optional deploying user (parameter)

# Every data-plane right granted: (scope, principal, role). infra/main.bicep justifies each.
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
    # The compiled-trees backend is opt-in and needs requirements-compiled.txt deployed too;
    # off (empty) is the safe default, and its cache directory and timeout only matter when on.
    "COMPILED_MODELS", "COMPILED_CACHE_DIR", "COMPILED_TIMEOUT_SECONDS",
}
# Never left to a default: the queue trigger binds %SCORE_QUEUE_NAME%, and the names must match
# the containers and queues the template creates.
MUST_BE_SET = {"MODEL_STORAGE_CONNECTION", "MODEL_CONTAINER", "BATCH_CONTAINER",
               "SCORE_QUEUE_NAME", "RESULTS_QUEUE_NAME", "CHUNK_QUEUE_NAME", "ROUTER_CONFIG_BLOB",
               "PREDICTION_LOG_CONNECTION", "PREDICTION_LOG_CONTAINER", "OUTCOME_LOG_CONTAINER"}

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


@lru_cache(maxsize=None)
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


@pytest.fixture(scope="module")
def tree() -> dict[str, Any]:
    return parse(MAIN)


def resolve(value: Any, tree: dict[str, Any], depth: int = 0) -> Any:
    """A variable or parameter reference replaced by its value (or default), recursively."""
    if depth > 20 or not isinstance(value, str):
        return value
    head, _, rest = value.partition(".")
    if head in tree["variables"]:
        found = tree["variables"][head]["value"]
    elif head in tree["parameters"] and not rest:
        return resolve(tree["parameters"][head]["default"], tree, depth + 1)
    else:
        return value
    for part in rest.split(".") if rest else ():
        if not isinstance(found, dict) or part not in found:
            return value
        found = found[part]
    return resolve(found, tree, depth + 1)


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource declaration's body (inside ``if (...)`` for a conditional resource)."""
    config = resource["config"]
    return config["config"] if "condition" in config and "config" in config else config


def condition(resource: dict[str, Any]) -> Any:
    config = resource["config"]
    return config.get("condition") if "config" in config else None


def resources_of(tree: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in tree["resources"].items() if r["type"] == type_}


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


def app_settings(tree: dict[str, Any]) -> dict[str, Any]:
    """The function app's settings: the object its siteConfig.appSettings loop runs over."""
    site = body(tree["resources"]["functionApp"])
    loop = site["properties"]["siteConfig"]["appSettings"]
    assert loop["loop_type"]["type"] == "object"
    assert loop["config"] == {"name": "setting.key", "value": "setting.value"}
    source = tree["variables"][loop["loop_type"]["detail"]["object_name"]]["value"]
    if "function" in source:
        assert source["function"]["type"] == "union"
        parts = list(source["function"]["parameters"].values())
    else:
        parts = [source]
    merged: dict[str, Any] = {}
    for part in parts:  # later objects win, as in Bicep's union()
        resolved = resolve(part, tree)
        assert isinstance(resolved, dict), f"app settings part {part!r} is not an object"
        merged.update({key: resolve(value, tree) for key, value in resolved.items()})
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


# -- resources -----------------------------------------------------------------------------------


def test_every_resource_the_app_needs_is_declared(tree):
    types = {r["type"] for r in tree["resources"].values() if not r["existing"]}
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
    } <= types
    assert tree["globals"]["scope"]["value"] == "resourceGroup"
    modules = [line for path in bicep_files() for line in path.read_text().splitlines()
               if re.match(r"\s*module\s", line)]
    assert not [m for m in modules if re.search(r"'(br|ts)[:/]", m)], "registry modules need network"


def test_storage_is_entra_id_only(tree):
    (storage,) = resources_of(tree, "Microsoft.Storage/storageAccounts").values()
    props = body(storage)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    for container in resources_of(tree, "Microsoft.Storage/storageAccounts/blobServices/containers").values():
        assert body(container)["properties"]["publicAccess"] == "None"


def test_containers_and_queues_match_the_app_settings(tree):
    containers = {resolve(body(r)["name"], tree) for r in
                  resources_of(tree, "Microsoft.Storage/storageAccounts/blobServices/containers").values()}
    queues = {resolve(body(r)["name"], tree) for r in
              resources_of(tree, "Microsoft.Storage/storageAccounts/queueServices/queues").values()}
    settings = app_settings(tree)
    assert {"models", "batch", "predictions", "outcomes"} <= containers
    assert [c for c in containers if c.startswith("app-package-")], containers
    assert settings["MODEL_CONTAINER"] == "models" and settings["BATCH_CONTAINER"] == "batch"
    # The host moves a message to <queue>-poison after maxDequeueCount deliveries.
    assert resolve("poisonQueueName", tree) == "${scoreQueueName}-poison"
    assert resolve("chunkPoisonQueueName", tree) == "${chunkQueueName}-poison"
    queues = {q.replace("${scoreQueueName}", settings["SCORE_QUEUE_NAME"])
              .replace("${chunkQueueName}", settings["CHUNK_QUEUE_NAME"]) for q in queues}
    assert queues == {settings["SCORE_QUEUE_NAME"], settings["RESULTS_QUEUE_NAME"],
                      f'{settings["SCORE_QUEUE_NAME"]}-poison', settings["CHUNK_QUEUE_NAME"],
                      f'{settings["CHUNK_QUEUE_NAME"]}-poison'}
    assert queues == {"score-requests", "score-results", "score-requests-poison", "score-chunks",
                      "score-chunks-poison"}
    assert settings["PREDICTION_LOG_CONTAINER"] == "predictions"
    assert settings["OUTCOME_LOG_CONTAINER"] == "outcomes"
    # The router config blob lives in the models container, under config/.
    assert settings["ROUTER_CONFIG_BLOB"] == "config/router.json"


def test_function_app_runs_python_311_on_flex_consumption_with_the_identity(tree):
    (plan,) = resources_of(tree, "Microsoft.Web/serverfarms").values()
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(plan)["properties"]["reserved"] is True
    (site,) = resources_of(tree, "Microsoft.Web/sites").values()
    site = body(site)
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${appIdentity.id}'"]
    props = site["properties"]
    assert props["httpsOnly"] is True and props["siteConfig"]["minTlsVersion"] == "1.2"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    assert storage["authentication"] == {"type": "UserAssignedIdentity",
                                         "userAssignedIdentityResourceId": "appIdentity.id"}
    scale = config["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    always_ready = scale["alwaysReady"]["operator"]["operands"]
    assert always_ready["true_value"] == [{"name": "http", "instanceCount": "alwaysReadyHttpInstances"}]
    assert always_ready["false_value"] == []
    params = tree["parameters"]
    assert params["alwaysReadyHttpInstances"]["default"] == 0
    assert params["instanceMemoryMB"]["default"] in (512, 2048, 4096)
    # Basic-auth publishing is off: deployments authenticate with Entra ID.
    policies = resources_of(tree, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == \
        {"scm": False, "ftp": False}


def test_application_insights_takes_entra_id_ingestion_only(tree):
    (insights,) = resources_of(tree, "Microsoft.Insights/components").values()
    props = body(insights)["properties"]
    assert props["DisableLocalAuth"] is True
    assert props["WorkspaceResourceId"] == "logAnalytics.id"


# -- app settings ----------------------------------------------------------------------------------


def test_app_settings_cover_every_setting_the_code_reads(tree):
    settings = app_settings(tree)
    read = {spec.env for spec in SPEC.values()} | set(TELEMETRY_SPEC)
    assert MUST_BE_SET <= read and not MUST_BE_SET & INTENTIONALLY_UNSET
    assert INTENTIONALLY_UNSET <= read, "stale entry in INTENTIONALLY_UNSET"
    assert sorted(read - set(settings) - INTENTIONALLY_UNSET) == []
    assert sorted(INTENTIONALLY_UNSET & set(settings)) == []


def test_app_settings_bind_every_setting_the_triggers_use(tree):
    settings = app_settings(tree)
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


def test_identity_based_host_storage_and_telemetry(tree):
    settings = app_settings(tree)
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


def test_the_code_accepts_the_deployed_settings(tree):
    env = {name: _placeholder(value) for name, value in app_settings(tree).items()}
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


def test_overrides_cannot_replace_identity_or_telemetry_settings(tree):
    source = tree["variables"]["appSettings"]["value"]["function"]["parameters"]
    order = list(source.values())
    assert tree["parameters"]["appSettingOverrides"]["default"] == {}
    assert order.index("appSettingOverrides") < order.index("telemetrySettings")
    assert order.index("appSettingOverrides") < order.index("storageSettings")


# -- no secrets ----------------------------------------------------------------------------------


def test_no_keys_connection_strings_or_instrumentation_keys(tree):
    for path in bicep_files():
        text = code_of(path)
        assert not KEY_CALL.search(text), f"{path.name}: a key-listing call or key property"
        for marker in SECRET_MARKERS:
            assert marker not in text, f"{path.name}: {marker}"
    settings = app_settings(tree)
    for name, value in settings.items():
        if name in ALLOWED_SECRET_LOOKING:
            assert value == ALLOWED_SECRET_LOOKING[name]
            continue
        for text in strings(value):
            assert "ConnectionString" not in text and "InstrumentationKey" not in text, name
            assert not re.search(r"(?i)\bkeys?\b|secret|password", text), name
    # The justification of the allowed connection string holds only with local auth disabled.
    (insights,) = resources_of(tree, "Microsoft.Insights/components").values()
    assert body(insights)["properties"]["DisableLocalAuth"] is True
    for name, output in tree["outputs"].items():
        for text in strings(output["value"]):
            assert not re.search(r"(?i)ConnectionString|InstrumentationKey|\bkeys?\b|secret|password",
                                 text), name
        assert not any(d["type"] == "secure" for d in output["decorators"])


def test_outputs_name_what_a_user_needs(tree):
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL", "AZURE_STORAGE_ACCOUNT_NAME",
            "MODEL_CONTAINER", "BATCH_CONTAINER", "PREDICTIONS_CONTAINER", "OUTCOMES_CONTAINER",
            "SCORE_QUEUE_NAME", "RESULTS_QUEUE_NAME", "POISON_QUEUE_NAME",
            "APPLICATIONINSIGHTS_NAME"} <= set(tree["outputs"])


# -- role assignments ------------------------------------------------------------------------------


def test_role_assignments_are_the_documented_least_privilege_set(tree):
    found = set()
    for name, assignment in resources_of(tree, "Microsoft.Authorization/roleAssignments").items():
        spec = body(assignment)
        props = spec["properties"]
        role_ref = props["roleDefinitionId"]["function"]
        assert role_ref["type"] == "subscription_resource_id", name
        assert role_ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        role = resolve(role_ref["parameters"]["resource_name_1"], tree)
        principal = props["principalId"]
        assert principal in (APP, USER), f"{name} targets {principal}"
        scope = spec["scope"]
        # Deterministic, idempotent names: one assignment per (scope, principal, role).
        guid = spec["name"]["function"]
        assert guid["type"] == "guid"
        parts = list(guid["parameters"].values())
        assert parts[0] == f"{scope}.id" and resolve(parts[2], tree) == role, name
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
    assert tree["parameters"]["principalId"]["default"] == ""


# -- parameters, azd -------------------------------------------------------------------------------


def test_parameters_are_described_and_safe_by_default(tree):
    for name, param in tree["parameters"].items():
        decorators = {d["type"]: d["argument"] for d in param["decorators"]}
        assert decorators.get("description"), f"parameter {name} has no @description"
        if name != "environmentName":
            assert param["default"] is not None, f"parameter {name} has no default"
    params = tree["parameters"]
    assert params["maximumInstanceCount"]["default"] <= 100
    assert params["storageSkuName"]["default"] == "Standard_LRS"
    file = json.loads((INFRA / "main.parameters.json").read_text())
    assert set(file["parameters"]) <= set(params)
    assert file["parameters"]["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert file["parameters"]["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    # a CI identity deploying with azd sets AZURE_PRINCIPAL_TYPE; a person gets the default
    assert file["parameters"]["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"


def test_the_site_config_has_nothing_flex_consumption_refuses(tree):
    text = (INFRA / "main.bicep").read_text()
    # Flex rejects siteConfig.ftpsState (400): FTP is off through the publishing policy instead.
    assert "ftpsState:" not in text
    assert "'ftp'" in text and "allow: false" in text
    scale = {d["type"]: d["argument"] for d in tree["parameters"]["maximumInstanceCount"]["decorators"]}
    assert (scale["min_value"], scale["max_value"]) == (40, 1000)


def test_azure_yaml_deploys_the_repository_root_as_a_python_function_app(tree):
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
    site = body(tree["resources"]["functionApp"])
    assert site["tags"]["function"]["parameters"]["arg_2"] == {"'azd-service-name'": service_name}
    assert (ROOT / "function_app.py").is_file() and (ROOT / "requirements.txt").is_file()


# -- workbook and queries ------------------------------------------------------------------------


def test_the_workbook_loads_every_query_file_once(tree):
    files = sorted(p.name for p in QUERIES.glob("*.kql"))
    assert files
    loaded = [v["query"]["function"]["parameters"]["file_path"]
              for v in tree["variables"]["workbookQueries"]["value"]]
    assert all(v["query"]["function"]["type"] == "load_text_content"
               for v in tree["variables"]["workbookQueries"]["value"])
    assert sorted(loaded) == [f"queries/{name}" for name in files]
    # One copy of the KQL: none inlined in a template.
    for path in bicep_files():
        assert not re.search(r"\b(customMetrics|requests)\s*\n?\s*\|", path.read_text()), path
    (workbook,) = resources_of(tree, "Microsoft.Insights/workbooks").values()
    props = body(workbook)["properties"]
    assert props["sourceId"] == "appInsights.id"
    assert props["serializedData"]["function"] == {"type": "string",
                                                   "parameters": {"value_to_convert": "workbookContent"}}


def test_queries_use_the_names_the_app_exports():
    telemetry = (ROOT / "shared" / "telemetry.py").read_text() + (ROOT / "shared" / "service.py").read_text()
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


# -- checkov -------------------------------------------------------------------------------------


def _checkov(*args: str) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("checkov")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "checkov.main"]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    run = subprocess.run([*command, *args, "-o", "json", "--quiet", "--skip-download"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep,) = [r for r in reports if r["check_type"] == "bicep"]
    return bicep


def test_checkov_passes_with_the_documented_skip_list():
    report = _checkov("--config-file", str(CHECKOV_CONFIG))
    assert report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["resource"], c["check_name"])
              for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["resource_count"] > 0


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
    assert skips == ["CKV_AZURE_35", "CKV_AZURE_59", "CKV_AZURE_17"]


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
    types = {r["type"] for r in (template["resources"].values() if isinstance(template["resources"], dict)
                                 else template["resources"])}
    assert "Microsoft.Web/sites" in types and "Microsoft.Insights/workbooks" in types
    broken = subprocess.run([*command, str(BROKEN)], capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0
