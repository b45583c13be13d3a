"""What the Functions worker reads when it indexes function_app.py."""

from __future__ import annotations

import subprocess
import sys

import azure.functions as func


def test_http_functions_routes_methods_and_auth_levels(app_functions):
    triggers = {f.get_function_name(): f.get_trigger() for f in app_functions}
    http = {name: (t.route, [m.value for m in t.methods or []], t.auth_level)
            for name, t in triggers.items() if t.get_binding_name() == "httpTrigger"}
    F, A = func.AuthLevel.FUNCTION, func.AuthLevel.ANONYMOUS
    assert http == {
        "score": ("score/{*name}", ["POST"], F),
        "v2_infer": ("v2/models/{*path}", ["POST"], F),
        "v2_model": ("v2/models/{*path}", ["GET"], F),
        "v2_server_metadata": ("v2", ["GET"], F),
        "endpoints": ("endpoints", ["GET"], F),
        "outcomes": ("outcomes/{*endpoint}", ["POST"], F),
        "health_live": ("v2/health/live", ["GET"], A),
        "health_ready": ("v2/health/ready", ["GET"], A),
        "openapi": ("openapi.json", ["GET"], A),
        "metrics_latency": ("metrics/latency", ["GET"], func.AuthLevel.ADMIN),
    }


def test_importing_the_app_loads_no_heavy_module():
    code = ("import sys, function_app; heavy = [m for m in ('numpy', 'lightgbm', 'azure.storage.blob', "
            "'azure.identity', 'shared.scoring.service') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
