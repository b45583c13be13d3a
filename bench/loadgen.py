"""A lean HTTP/1.1 load generator for the HTTP benchmarks: keep-alive connections on raw
asyncio streams, requests pre-encoded, responses read by ``Content-Length``.

httpx spends ~10x the CPU per request that this does; on a 2-core machine shared with the
servers under test, that made the client the bottleneck at concurrency 16, so the figure
measured the client, not the servers.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


def _request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += data[:-2]


async def load(url: str, bodies: list[bytes], concurrency: int, total: int,
               headers: dict[str, str]) -> tuple[list[float], float]:
    """POST ``total`` requests (bodies in rotation) over ``concurrency`` connections; returns
    per-request latencies (seconds) and requests per second. Any non-200 raises."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [_request(f"{host}:{port}", parts.path or "/", b, headers) for b in bodies]
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                t0 = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"{url}: {status} {body[:200]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, total / (time.perf_counter() - start)
