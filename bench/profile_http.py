"""Profile the local host under load with py-spy: where a single-row HTTP scoring spends its time.

Starts Azurite and the local host serving ``function_app.py``, warms the bench model, then
records the host process with py-spy (``requirements-dev.txt``) while ``bench/loadgen.py``
sends single-row requests at concurrency 16, and prints the functions with the most samples
(self and inclusive). ``--out FILE`` keeps the collapsed stacks (flame graph input).

Run: ``.venv/bin/python bench/profile_http.py [--seconds 8] [--out stacks.txt]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import HOST_SCHEDULES, bench_model_path, bench_rows  # noqa: E402
from bench.loadgen import load  # noqa: E402

KEY = "bench-key"


def top_frames(stacks: Path, n: int = 25) -> None:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, samples = stack.split(";"), int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(f"\n{total} samples of the local host's threads\n\nself:")
    for frame, samples in own.most_common(n):
        print(f"{samples / total:6.1%}  {frame[:120]}")
    print("\ninclusive (scorefn, devhost and handler frames):")
    ours = [(f, s) for f, s in inclusive.items()
            if any(p in f for p in ("shared/", "score_function/", "devhost/"))]
    for frame, samples in sorted(ours, key=lambda x: -x[1])[:n]:
        print(f"{samples / total:6.1%}  {frame[:120]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, help="keep the collapsed stacks here")
    args = parser.parse_args()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed (pip install -r requirements-dev.txt)")

    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import Azurite
    from devhost.process import DevHost

    bodies = [orjson.dumps({"rows": [r.tolist()]}) for r in bench_rows()]
    headers = {"content-type": "application/json", "x-functions-key": KEY}
    with Azurite() as azurite, tempfile.TemporaryDirectory() as tmp:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client("models")
        container.create_container()
        container.upload_blob("bench.txt", bench_model_path().read_bytes())
        env = {"AzureWebJobsStorage": azurite.connection_string, "DEVHOST_FUNCTION_KEY": KEY,
               "SCORE_QUEUE_NAME": "bench", "RESULTS_QUEUE_NAME": "bench-results",
                   **HOST_SCHEDULES}
        out = args.out or Path(tmp) / "stacks.txt"
        with DevHost(ROOT, env, queues=False) as host:
            url = f"{host.url}/api/score/bench"
            asyncio.run(load(url, bodies, 1, 300, headers))  # load the model
            recorder = subprocess.Popen(
                [spy, "record", "-p", str(host.pid), "-d", str(int(args.seconds)), "-r", "500",
                 "-f", "raw", "-o", str(out), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
            deadline = time.monotonic() + args.seconds
            sent = 0
            while time.monotonic() < deadline:
                _, rps = asyncio.run(load(url, bodies, 16, 2000, headers))
                sent += 2000
            if recorder.wait() != 0:
                sys.exit(f"py-spy failed: {recorder.stderr.read()[-500:]}")
        print(f"{sent:,} requests at concurrency 16 (last batch {rps:,.0f} req/s)")
        top_frames(out)


if __name__ == "__main__":
    main()
