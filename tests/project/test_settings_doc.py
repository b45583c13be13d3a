"""docs/settings.md is what shared/settings_doc writes from the declarations, and the example
local settings name only settings that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.settings import HOST_SETTINGS, SPEC, TELEMETRY_SPEC, Settings, telemetry_settings
from shared.settings_doc import COMMAND, DOC_PATH, MAKE_TARGET, main, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "local.settings.example.json"


def test_docs_settings_md_is_what_the_generator_writes():
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert current == render(), (
        f"docs/settings.md is not what the settings declarations in shared/settings.py give: "
        f"regenerate it with `{MAKE_TARGET}` (or `{COMMAND}`) and commit it")


def test_the_check_option_agrees(capsys):
    assert main(["--check"]) == (0 if DOC_PATH.read_text(encoding="utf-8") == render() else 1)


def test_every_declared_setting_has_a_row_with_its_default():
    text = render()
    for spec in [*SPEC.values(), *TELEMETRY_SPEC.values()]:
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{spec.env}` |")]
        assert spec.allowed.split()[0] in row
    assert "| `MAX_ROWS_PER_REQUEST` | `10000` |" in text
    assert "| `MAX_REQUEST_BYTES` | `4194304` (4 MiB) |" in text
    assert "| `ROUTER_CHECK_MODELS` | `true` |" in text
    assert "| `TELEMETRY_TRACE_SAMPLE_RATIO` | `0.05` |" in text
    assert "an integer from 1 to 10,000,000" in text  # bounds come from the parser


def test_settings_are_grouped_as_the_readme_grouped_its_tables():
    headings = re.findall(r"^## (.+)$", render(), flags=re.M)
    assert headings[:6] == ["Models, limits and prediction", "Batch jobs (queue)",
                            "Routing (A/B, canary, shadow)", "Prediction and outcome logs",
                            "Monitoring (drift)", "Telemetry"]
    assert SPEC["compile_on_instance"].group == SPEC["max_rows_per_request"].group
    assert SPEC["chunk_queue_name"].group == SPEC["score_queue_name"].group


def test_the_example_local_settings_name_only_declared_or_host_settings():
    values = json.loads(EXAMPLE.read_text(encoding="utf-8"))["Values"]
    declared = {spec.env for spec in SPEC.values()} | set(TELEMETRY_SPEC)
    connections = {"AzureWebJobsStorage"} | {
        SPEC[name].default for name in ("storage_connection", "prediction_log_connection")}
    unknown = [name for name in values if name not in declared and name not in HOST_SETTINGS
               and name.split("__", 1)[0] not in connections]
    assert unknown == [], f"local.settings.example.json names settings nothing declares: {unknown}"
    assert not declared & set(HOST_SETTINGS)


def test_the_example_local_settings_are_valid():
    values = json.loads(EXAMPLE.read_text(encoding="utf-8"))["Values"]
    settings = Settings.from_env(values)
    telemetry_settings(values)
    for name, spec in SPEC.items():
        if spec.env in values:
            assert getattr(settings, name) == spec.parse(values[spec.env])
