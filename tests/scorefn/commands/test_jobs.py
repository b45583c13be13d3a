"""``python -m scorefn jobs``: submit puts a base64 job message on the queue, wait finds the
job's result (leaving other jobs' results alone) and summarises it. Here the test plays the
Functions host: it takes the message off the queue and hands it to the core."""

from __future__ import annotations

import base64
import threading
from contextlib import contextmanager

import orjson
import pytest

from scorefn.__main__ import main as cli
from tests.batch_support import rig, sample, to_csv  # noqa: F401

CHURN = ("tenure_months", "monthly_charges", "support_calls", "contract_months", "age",
         "usage_gb", "late_payments", "discount_pct")


def jobs_cli(rig, *args: str) -> int:
    return cli(["jobs", *args, "--connection-string", rig.azurite.connection_string,
                "--queue", rig.settings.score_queue_name,
                "--results-queue", rig.settings.results_queue_name,
                "--container", rig.settings.batch_container])


def run_queued(rig) -> list:
    """Do what the host does with every message on the job queue."""
    queue = rig.queues.get_queue_client(rig.settings.score_queue_name)
    outcomes = []
    for message in queue.receive_messages(max_messages=32):
        outcomes.append(rig.jobs.handle(base64.b64decode(message.content), message_id=message.id,
                                        dequeue_count=message.dequeue_count))
        queue.delete_message(message)
    return outcomes


def test_submit_inline_then_wait(rig, tmp_path, capsys):
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]}))
    assert jobs_cli(rig, "submit", "price", "--rows-file", str(body), "--id", "cli-inline") == 0
    [sent] = rig.queues.get_queue_client(rig.settings.score_queue_name).peek_messages()
    assert orjson.loads(base64.b64decode(sent.content)) == {
        "id": "cli-inline", "endpoint": "price", "rows": [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]}
    run_queued(rig)
    assert jobs_cli(rig, "wait", "cli-inline", "--timeout", "10") == 0
    out = capsys.readouterr().out
    assert "cli-inline succeeded: 2 rows" in out and "predictions: 2 in the result message" in out


def test_submit_a_local_file_and_wait_consuming_only_its_own_result(rig, tmp_path, capsys):
    rig.run({"id": "someone-else", "endpoint": "price", "rows": [[1] * 6]}, message_id="other")
    local = tmp_path / "in.csv"
    local.write_bytes(to_csv(sample(8, 40), CHURN, [str(i) for i in range(40)], "cid"))
    assert jobs_cli(rig, "submit", "churn", "--input", str(local), "--id", "cli-blob",
                    "--id-column", "cid", "--output-format", "jsonl") == 0
    assert rig.exists("inputs/cli-blob/in.csv")
    run_queued(rig)
    assert jobs_cli(rig, "wait", "cli-blob", "--consume", "--json") == 0
    result = orjson.loads(capsys.readouterr().out.split("\n", 2)[-1])
    assert (result["id"], result["rows"], result["output_blob"]) == \
        ("cli-blob", 40, "predictions/cli-blob.jsonl")
    assert [r["id"] for r in rig.sent_results()] == ["someone-else"]  # still there, visible


def test_wait_reports_a_failed_job_and_times_out_on_an_unknown_one(rig, capsys):
    assert jobs_cli(rig, "submit", "churn", "--input-blob", "inputs/missing.csv", "--id",
                    "cli-missing") == 0
    run_queued(rig)
    assert jobs_cli(rig, "wait", "cli-missing") == 1
    assert "cli-missing failed: input_not_found" in capsys.readouterr().out
    assert jobs_cli(rig, "wait", "never-sent", "--timeout", "1") == 3
    assert "no record yet (queued and not picked up, or never submitted)" in capsys.readouterr().err


def test_submit_checks_its_arguments(rig, tmp_path):
    with pytest.raises(SystemExit, match="one of --rows-file"):
        jobs_cli(rig, "submit", "churn")
    with pytest.raises(SystemExit, match="--id must be"):
        jobs_cli(rig, "submit", "churn", "--input-blob", "x.csv", "--id", "no spaces")
    big = tmp_path / "big.json"
    big.write_bytes(orjson.dumps({"rows": [[1.25] * 8] * 4000}))
    with pytest.raises(SystemExit, match="--input"):
        jobs_cli(rig, "submit", "churn", "--rows-file", str(big))


@contextmanager
def worker(rig):
    """A background host: runs every message put on the job queue while the CLI waits."""
    stop = threading.Event()

    def loop() -> None:
        from azure.core.exceptions import ResourceNotFoundError

        while not stop.is_set():
            try:
                run_queued(rig)
            except ResourceNotFoundError:  # no job queue yet: the CLI creates it
                pass
            stop.wait(0.2)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_submit_wait_says_never_submitted_only_of_a_job_it_did_not_submit(rig, tmp_path, capsys):
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6]]}))
    assert jobs_cli(rig, "submit", "price", "--rows-file", str(body), "--id", "cli-quick",
                    "--wait", "--timeout", "1") == 3  # nobody runs the queue: times out
    captured = capsys.readouterr()
    assert "never submitted" not in captured.err + captured.out
    assert "cli-quick: no result within 1 s (queued, not picked up yet)" in captured.err
    with worker(rig):
        assert jobs_cli(rig, "submit", "price", "--rows-file", str(body), "--id", "cli-waited",
                        "--wait", "--timeout", "30") == 0
        assert jobs_cli(rig, "wait", "cli-quick", "--timeout", "30") == 0
    captured = capsys.readouterr()
    assert "cli-waited succeeded: 1 rows" in captured.out and "cli-quick succeeded" in captured.out
    assert "never submitted" not in captured.err + captured.out


def test_submit_wait_reports_an_id_already_used_by_another_job(rig, tmp_path, capsys):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_bytes(orjson.dumps({"rows": [[1, 2, 3, 4, 5, 6]]}))
    second.write_bytes(orjson.dumps({"rows": [[9, 9, 9, 9, 9, 9]]}))
    with worker(rig):
        assert jobs_cli(rig, "submit", "price", "--rows-file", str(first), "--id", "cli-twice",
                        "--wait", "--timeout", "30") == 0
        capsys.readouterr()
        # the same id with other rows: this message fails, never the first job's success
        assert jobs_cli(rig, "submit", "price", "--rows-file", str(second), "--id", "cli-twice",
                        "--wait", "--timeout", "30") == 1
        out = capsys.readouterr().out
        assert "cli-twice failed: job_id_reused: job id 'cli-twice' was already used" in out
        # the first job's message again is that job: its result
        assert jobs_cli(rig, "submit", "price", "--rows-file", str(first), "--id", "cli-twice",
                        "--wait", "--timeout", "30") == 0
    assert "cli-twice succeeded: 1 rows" in capsys.readouterr().out
