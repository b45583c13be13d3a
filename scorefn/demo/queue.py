"""The demo's queue part: an inline job and a 100,000-row blob job through the local host."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scorefn.demo.models import churn_features


def run_queue_demo(azurite, models, boosters, say: Callable[[str], None]) -> None:
    """Submit jobs with the CLI (as a user would), wait for their results, check the output."""
    from azure.storage.blob import BlobServiceClient

    from scorefn.__main__ import main as cli

    storage = ["--connection-string", azurite.connection_string]
    rng = np.random.default_rng(21)
    say("\nBatch jobs through the queue (python -m scorefn jobs submit ... --wait)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = churn_features(5, rng)
        inline = Path(tmp) / "rows.json"
        inline.write_text(json.dumps({"rows": [[None if np.isnan(v) else float(v) for v in r]
                                               for r in rows]}))
        cli(["jobs", "submit", "churn", "--rows-file", str(inline), "--id", "demo-inline",
             "--wait", "--timeout", "120", *storage])

        n = 100_000
        X = churn_features(n, rng)
        features = models["churn"].feature_names
        path = Path(tmp) / "customers.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["customer_id", *features])
            for i, row in enumerate(X):
                writer.writerow([f"c{i}", *("" if np.isnan(v) else repr(float(v)) for v in row)])
        start = time.perf_counter()
        cli(["jobs", "submit", "churn", "--input", str(path), "--id-column", "customer_id",
             "--id", "demo-blob", "--output-blob", "predictions/demo-blob.csv", "--wait",
             "--timeout", "300", *storage])
        elapsed = time.perf_counter() - start
    output = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_container_client("batch").download_blob("predictions/demo-blob.csv").readall()
    reader = csv.reader(io.StringIO(output.decode()))
    header = next(reader)
    got = [(row[0], float(row[-1])) for row in reader]
    ids_in_order = [i for i, _ in got] == [f"c{i}" for i in range(n)]
    equal = np.array_equal(np.array([p for _, p in got]), boosters["churn"].predict(X))
    say(f"  blob job: {n:,} rows, columns {header}, ids in input order: "
        f"{'yes' if ids_in_order else 'NO'}, equal to Booster.predict: {'yes' if equal else 'NO'}")
    say(f"  submit (with upload) to result: {elapsed:.1f} s, {n / elapsed:,.0f} rows/s end to end")
