"""The bare baseline for bench/http.py: uvicorn + a raw ASGI app calling Booster.predict.

No auth, no validation, no model store: what a minimal hand-written server would do.
Usage: python bench/baseline_server.py MODEL_FILE PORT_FILE
"""

import socket
import sys

import lightgbm as lgb
import numpy as np
import orjson
import uvicorn

booster = lgb.Booster(model_file=sys.argv[1])


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    rows = np.array(orjson.loads(body)["rows"], dtype=np.float64)
    predictions = booster.predict(rows, num_threads=1)
    payload = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    # proto=IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    with open(sys.argv[2], "w") as f:
        f.write(str(sock.getsockname()[1]))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
