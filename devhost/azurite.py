"""Start and stop a real Azurite (the npm package pinned in package.json) on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Azurite's well-known development account: public, documented, and only ever used locally.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
           "K1SZFPTOtr/KBHBeksoGMGw==")
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[^:]+:(\d+)")


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM Azurite if the process that started it dies, so a
    killed test run or demo never leaves an orphaned Azurite behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Azurite:
    """A running Azurite process. ``blob_port=0`` picks a free port (the real one is read
    from Azurite's output); fixed ports let a test restart it where clients expect it."""

    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    # How often Azurite sweeps deleted data (its default: 10 minutes). A long-lived Azurite
    # that deletes a lot (a test session) is given a longer one: see devhost/azurite_gc.js.
    gc_interval_ms: int | None = None
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Azurite:
        script = ROOT / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"
        if not script.exists():
            raise RuntimeError("Azurite is not installed: run `npm ci` (make does it for you)")
        env = dict(os.environ)
        preload: list[str] = []
        if self.gc_interval_ms is not None:
            preload = ["-r", str(Path(__file__).with_name("azurite_gc.js"))]
            env["AZURITE_GC_INTERVAL_MS"] = str(self.gc_interval_ms)
        cmd = ["node", *preload, str(script), "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
               "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
               "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
               "--inMemoryPersistence", "--extentMemoryLimit", "4096",
               "--disableTelemetry", "--skipApiVersionCheck", "--loose",
               # Node closes idle connections after 5 s by default; a client reusing one at
               # that moment loses its request (the SDK then retries a create and gets 409).
               # Azure Storage keeps idle connections for minutes.
               "--blobKeepAliveTimeout", "300", "--queueKeepAliveTimeout", "300",
               "--tableKeepAliveTimeout", "300"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                        preexec_fn=_die_with_parent, env=env)
        ports: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while len(ports) < 3:
            line = self.process.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError("Azurite exited before it was ready")
            match = _LISTENING.search(line)
            if match:
                ports[match.group(1)] = int(match.group(2))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Azurite did not start in time")
        self.blob_port, self.queue_port, self.table_port = ports["Blob"], ports["Queue"], ports["Table"]
        # Keep reading its output so a full pipe never blocks it.
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        stream = self.process.stdout if self.process else None
        if stream is not None:
            for _ in stream:
                pass

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{DEV_ACCOUNT};"
                f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{DEV_ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/{DEV_ACCOUNT};")

    def stop(self) -> None:
        """Stop Azurite by its PID (its whole process group), waiting for it to exit."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same ports (contents are lost: in-memory)."""
        self.stop()
        self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
