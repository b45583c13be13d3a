"""The project's Azurite: started on free ports, and its sweep of deleted data set by the
preload the test session uses (checked against the pinned Azurite's own module)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from devhost.azurite import Azurite

ROOT = Path(__file__).resolve().parents[2]
CONSTANTS = ROOT / "node_modules" / "azurite" / "dist" / "src" / "{}" / "utils" / "constants.js"


def sweep_interval(service: str, preload: bool, interval: str | None) -> int:
    env = dict(os.environ)
    env.pop("AZURITE_GC_INTERVAL_MS", None)
    if interval is not None:
        env["AZURITE_GC_INTERVAL_MS"] = interval
    args = ["-r", str(ROOT / "devhost" / "azurite_gc.js")] if preload else []
    out = subprocess.run(["node", *args, "-e", f"console.log(require({str(CONSTANTS).format(service)!r})"
                          ".DEFAULT_GC_INTERVAL_MS)"], env=env, capture_output=True, text=True,
                         check=True, timeout=30)
    return int(out.stdout)


def test_the_preload_sets_the_sweep_interval_of_blobs_and_queues():
    assert sweep_interval("blob", preload=False, interval=None) == 600_000  # Azurite's own
    for service in ("blob", "queue"):
        assert sweep_interval(service, preload=True, interval="86400000") == 86_400_000
    assert sweep_interval("blob", preload=True, interval=None) == 600_000  # unset: untouched


def test_an_azurite_with_a_long_sweep_interval_serves():
    with Azurite(gc_interval_ms=86_400_000) as server:
        container = BlobServiceClient.from_connection_string(
            server.connection_string).get_container_client("sweep")
        container.create_container()
        container.upload_blob("x", b"1")
        assert container.download_blob("x").readall() == b"1"
