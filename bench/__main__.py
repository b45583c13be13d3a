"""``python -m bench [NAME ...]``: run the benchmarks one after the other (never two at once:
the machine has 2 cores) and print their figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = ["core_path", "http_latency", "cold_start", "telemetry", "router", "shadow", "batch",
       "batch_fanout", "prediction_log", "compiled", "rollout_simulation", "gil_convoy",
       "drift_false_alarms"]


def main(argv: list[str]) -> int:
    names = argv or [n for n in ALL if (HERE / f"{n}.py").exists()]
    failed = []
    for name in names:
        print(f"\n=== bench/{name}.py", flush=True)
        if subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE.parent).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
