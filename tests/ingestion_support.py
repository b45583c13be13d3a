"""A stand-in Application Insights ingestion endpoint that keeps what the exporter sends."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Ingestion:
    """Serves ``POST`` like the ingestion endpoint (accepting everything) on 127.0.0.1 and
    keeps each body, gunzipped, in :attr:`received`. Its thread is a daemon: the exporter may
    still post once at process exit, and a refused connection would log a retry."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    data = gzip.decompress(data)
                received.append(data)
                answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def connection_string(self) -> str:
        return ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                f"IngestionEndpoint=http://127.0.0.1:{self.server.server_port}/")

    def text(self) -> str:
        return b"\n".join(self.received).decode("utf-8", "replace")

    def close(self) -> None:
        self.server.shutdown()
