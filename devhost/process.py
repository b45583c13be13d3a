"""Run ``python -m devhost`` as a child process (for tests and the demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
READY_PREFIX = "DEVHOST READY "


class DevHost:
    """A devhost process serving ``app_dir``. ``env`` is added to this process's environment.

    Its stderr goes to ``log_path`` (a temporary file unless given) and its stdout is copied
    there as long as it runs, so no pipe ever fills up.
    """

    def __init__(self, app_dir: str | Path, env: Mapping[str, str] | None = None, *,
                 auth: bool = True, queues: bool = True, lease_seconds: int = 600,
                 settings_file: str | Path | None = None, port: int = 0,
                 log_path: str | Path | None = None,
                 shutdown_timeout: float | None = None, worker: str | None = None) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.env = dict(env or {})
        self.auth, self.queues, self.lease_seconds = auth, queues, lease_seconds
        self.settings_file = Path(settings_file).resolve() if settings_file else None
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self.worker = worker  # --worker: auto (None), library or builtin
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="devhost-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.url: str | None = None
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "devhost", "--app-dir", str(self.app_dir),
               "--port", str(self.port), "--queue-lease-seconds", str(self.lease_seconds)]
        if self.settings_file:
            cmd += ["--settings", str(self.settings_file)]
        if self.shutdown_timeout is not None:
            cmd += ["--shutdown-timeout", str(self.shutdown_timeout)]
        if self.worker:
            cmd += ["--worker", self.worker]
        if not self.auth:
            cmd.append("--no-auth")
        if not self.queues:
            cmd.append("--no-queues")
        return cmd

    def start(self, timeout: float = 60.0) -> DevHost:
        """Spawn the host and wait for its READY line; raise (with the log's tail) otherwise."""
        if self.process is not None:
            raise RuntimeError("this DevHost is already started")
        self._ready.clear()
        with open(self.log_path, "ab") as stderr_log:  # the child writes its stderr here itself
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_log, text=True,
                errors="replace", start_new_session=True)
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                exited = self.process.poll() is not None
                self.kill()
                reason = "exited" if exited else f"was not ready within {timeout:.0f} s"
                raise RuntimeError(f"devhost {reason}; log {self.log_path}:\n{self.log_tail()}")
        return self

    def _drain(self, stream: IO[str]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in stream:
                if line.startswith(READY_PREFIX) and not self._ready.is_set():
                    self.url = line[len(READY_PREFIX):].strip()
                    self._ready.set()
                log.write(line)
                log.flush()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it if still running after ``timeout``."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(timeout=10)
        self.process = None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash, as far as the app is concerned)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.process = None

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> DevHost:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
