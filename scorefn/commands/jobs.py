"""``jobs submit`` and ``jobs wait``: send batch scoring jobs to the queue, wait for results."""

from __future__ import annotations

import argparse
import base64
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from scorefn.commands.storage_args import JOBS, add_storage_args, app_settings, blob_service, queue_service

TIMEOUT_EXIT = 3


def register(subparsers) -> None:
    jobs = subparsers.add_parser(
        "jobs", help="submit batch scoring jobs to the queue and wait for their results",
        description="Batch scoring through the job queue: inline rows, or a CSV / JSON Lines "
                    "blob of any size scored in chunks into an output blob. Queue and container "
                    "names default to the app settings SCORE_QUEUE_NAME, RESULTS_QUEUE_NAME and "
                    "BATCH_CONTAINER from the environment (else score-requests, score-results, "
                    "batch).")
    jobs.set_defaults(run=lambda args: (jobs.print_help(), 2)[1])
    commands = jobs.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND")

    submit = commands.add_parser(
        "submit", help="send one job (inline rows, a local file, or a blob) to the job queue",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send one scoring job to the job queue (base64-encoded, as the Functions "
                    "host expects) and print its id.",
        epilog="examples:\n"
               "  python -m scorefn jobs submit churn --rows-file body.json --wait\n"
               "  python -m scorefn jobs submit churn --input customers.csv "
               "--id-column customer_id --wait\n"
               "  python -m scorefn jobs submit churn --input-blob inputs/2026-11-24.csv "
               "--output-blob predictions/nov24.csv --id job-nov24")
    submit.add_argument("endpoint", help="endpoint (model name) to score with, e.g. churn")
    source = submit.add_argument_group("input (one of --rows-file, --input, --input-blob)")
    source.add_argument("--rows-file", type=Path, metavar="FILE.json",
                        help="inline job: a JSON file shaped like the HTTP body ({\"rows\": ...} "
                             "or {\"records\": ...}, optional \"options\"); at most 48 KiB of "
                             "JSON (a queue message holds 64 KiB, base64-encoded)")
    source.add_argument("--input", type=Path, metavar="FILE",
                        help="a local .csv (header of feature names) or .jsonl file: uploaded to "
                             "the batch container first (see --input-blob for its name)")
    source.add_argument("--input-blob", metavar="NAME",
                        help="blob job on an existing blob (with --input: the name to upload as; "
                             "default inputs/JOB_ID/FILENAME)")
    submit.add_argument("--input-container", metavar="NAME",
                        help="container of the input blob (default: the batch container; another "
                             "must be in the app's BATCH_ALLOWED_CONTAINERS)")
    submit.add_argument("--id", dest="job_id", metavar="JOB_ID",
                        help="idempotency key: a job with the same id runs once (default: a new "
                             "id, printed)")
    submit.add_argument("--id-column", metavar="COLUMN",
                        help="input column (or JSON key) copied into every output row, to join "
                             "results back")
    submit.add_argument("--output-blob", metavar="NAME",
                        help="output blob (default predictions/JOB_ID.csv or .jsonl)")
    submit.add_argument("--output-container", metavar="NAME",
                        help="container of the output blob (default: the batch container; another "
                             "must be in the app's BATCH_ALLOWED_CONTAINERS)")
    submit.add_argument("--output-format", choices=("csv", "jsonl"),
                        help="output format (default: the input's)")
    submit.add_argument("--raw-score", action="store_true",
                        help="raw margins instead of probabilities")
    submit.add_argument("--wait", action="store_true", help="then wait for the result (see jobs wait)")
    _add_names(submit)
    _add_wait_options(submit)
    add_storage_args(submit, "jobs")
    submit.set_defaults(run=submit_job)

    wait = commands.add_parser(
        "wait", help="wait for a job's result and print a summary",
        description="Wait for the result of job JOB_ID on the results queue, showing progress "
                    "from the job's record (jobs/JOB_ID.json in the batch container; for a job "
                    "fanned out across instances, a progress bar of its chunks from "
                    "jobs/JOB_ID/plan.json and the chunk markers). Other "
                    "jobs' results are left alone: they are peeked at, not received, unless "
                    "--consume is given. Exit status: 0 succeeded, 1 failed (or poisoned), "
                    f"{TIMEOUT_EXIT} timed out.")
    wait.add_argument("job_id", metavar="JOB_ID", help="the id printed by jobs submit")
    _add_names(wait)
    _add_wait_options(wait)
    add_storage_args(wait, "jobs")
    wait.set_defaults(run=wait_job)


def _add_names(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("queues and containers")
    group.add_argument("--queue", default=None, metavar="NAME",
                       help="job queue (default $SCORE_QUEUE_NAME or score-requests)")
    group.add_argument("--results-queue", default=None, metavar="NAME",
                       help="results queue (default $RESULTS_QUEUE_NAME or score-results)")
    group.add_argument("--container", default=None, metavar="NAME",
                       help="batch container (default $BATCH_CONTAINER or batch)")


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("waiting")
    group.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                       help="give up after this long (default 600)")
    group.add_argument("--consume", action="store_true",
                       help="delete the job's result message from the results queue once read "
                            "(other results are made visible again at once)")
    group.add_argument("--json", action="store_true", help="print the result message as JSON")


def _names(args: argparse.Namespace) -> tuple[str, str, str]:
    settings = app_settings()
    return (args.queue or settings.score_queue_name,
            args.results_queue or settings.results_queue_name,
            args.container or settings.batch_container)


# -- submit --------------------------------------------------------------------------------

def submit_job(args: argparse.Namespace) -> int:
    import orjson

    from shared.batch.messages import JOB_ID_RE, MAX_MESSAGE_BYTES, job_digest

    if bool(args.rows_file) == bool(args.input or args.input_blob):
        raise SystemExit("give the rows with one of --rows-file (inline), --input (a local file "
                         "to upload) or --input-blob (a blob already in storage)")
    queue_name, _, container = _names(args)
    job_id = args.job_id or f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    if not JOB_ID_RE.match(job_id):
        raise SystemExit("--id must be 1-128 letters, digits, '.', '_', ':' or '-'")
    message: dict[str, Any] = {"id": job_id, "endpoint": args.endpoint}
    options = {"raw_score": True} if args.raw_score else None
    if args.rows_file:
        body = orjson.loads(args.rows_file.read_bytes())
        if not isinstance(body, dict):
            raise SystemExit(f"{args.rows_file} must hold a JSON object like {{\"rows\": [...]}}")
        message.update(body)
        if options:
            message["options"] = {**body.get("options", {}), **options}
    else:
        blob_name = args.input_blob
        if args.input is not None:
            blob_name = blob_name or f"inputs/{job_id}/{args.input.name}"
            _upload(args, args.input, args.input_container or container, blob_name)
        message["input"] = {"blob": blob_name}
        if args.input_container:
            message["input"]["container"] = args.input_container
        output = {k: v for k, v in (("blob", args.output_blob), ("container", args.output_container),
                                    ("format", args.output_format)) if v}
        if output:
            message["output"] = output
        if args.id_column:
            message["id_column"] = args.id_column
        if options:
            message["options"] = options
    encoded = orjson.dumps(message)
    if len(encoded) > MAX_MESSAGE_BYTES:
        raise SystemExit(f"the job message is {len(encoded):,} bytes; a queue message holds "
                         f"{MAX_MESSAGE_BYTES:,}: put the rows in a file and use --input")
    client = queue_service(args).get_queue_client(queue_name)
    _send(client, base64.b64encode(encoded).decode("ascii"))
    print(f"submitted {job_id} to queue {queue_name}")
    if args.wait:
        args.job_id = job_id
        return wait_job(args, submitted=job_digest(message))
    return 0


def _upload(args: argparse.Namespace, path: Path, container: str, blob_name: str) -> None:
    client = blob_service(args, JOBS).get_container_client(container)
    if not client.exists():
        client.create_container()
    size = path.stat().st_size
    started = time.monotonic()
    with path.open("rb") as stream:
        client.upload_blob(blob_name, stream, length=size, overwrite=True, max_concurrency=4)
    print(f"uploaded {path} ({size:,} bytes) to {container}/{blob_name} in "
          f"{time.monotonic() - started:.1f} s")


def _send(client, text: str) -> None:
    """Send, creating the queue only when it does not exist yet (local runs): in Azure the
    queue exists and the user needs no more than Storage Queue Data Message Sender."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    try:
        client.send_message(text)
    except ResourceNotFoundError:
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        client.send_message(text)


# -- wait ----------------------------------------------------------------------------------

def wait_job(args: argparse.Namespace, submitted: str | None = None) -> int:
    """Wait for job ``args.job_id``. ``submitted``: the job digest of the message this command
    just sent (``jobs submit --wait``): the job is known to be queued, and if its id already
    names another job, only this message's ``job_id_reused`` failure is its result."""
    queue_name, results_name, container = _names(args)
    queues = queue_service(args)
    results = queues.get_queue_client(results_name)
    poison = queues.get_queue_client(f"{queue_name}-poison")
    batch = blob_service(args, JOBS).get_container_client(container)
    record_blob = batch.get_blob_client(f"jobs/{args.job_id}.json")
    progress = _Progress(sys.stderr)
    deadline = time.monotonic() + args.timeout
    polls = 0
    while True:
        record = _read_record(record_blob) if submitted is not None else None
        reused = (submitted is not None and isinstance(record, dict)
                  and record.get("job_sha256") not in (None, submitted))
        result = _find_result(results, args.job_id, consume=args.consume,
                              accept=_is_reuse_failure if reused else None)
        if result is None and not reused:
            record = _read_record(record_blob)
            if record and record.get("state") in ("committed", "done") \
                    and isinstance(record.get("result"), dict):
                # Sent (or about to be), but not among the messages we can see: e.g. another
                # consumer took it, or more than 32 results are waiting.
                result = record["result"]
        if result is not None:
            progress.clear()
            return _report(result, args.json)
        if polls % 5 == 0 and _in_poison(poison, args.job_id):
            progress.clear()
            print(f"{args.job_id} failed: its message was moved to {queue_name}-poison after "
                  f"repeated transient failures (see the function's logs)")
            return 1
        if time.monotonic() > deadline:
            progress.clear()
            print(f"{args.job_id}: no result within {args.timeout:.0f} s "
                  f"({_describe(record, submitted=submitted is not None, reused=reused)})",
                  file=sys.stderr)
            return TIMEOUT_EXIT
        status = None if reused else _fanout_status(batch, args.job_id, record)
        progress.show(f"{args.job_id}: "
                      f"{_describe(record, status, submitted=submitted is not None, reused=reused)}")
        polls += 1
        time.sleep(1.0)


def _is_reuse_failure(doc: dict[str, Any]) -> bool:
    return (doc.get("error") or {}).get("code") == "job_id_reused"


def _fanout_status(batch, job_id: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chunks done of a job fanned out across instances (None for other jobs)."""
    if not record or not (record.get("fanout") or record.get("state") == "fanned_out"):
        return None
    from azure.core.exceptions import AzureError

    from shared.batch.fanout.status import read_status

    try:
        return read_status(batch, job_id)
    except AzureError:
        return None


def progress_bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _describe(record: dict[str, Any] | None, status: dict[str, Any] | None = None, *,
              submitted: bool = False, reused: bool = False) -> str:
    if reused:
        return ("its id already names a different job: waiting for this message's "
                "job_id_reused failure")
    if record is None:
        if submitted:  # this command sent it: it is on the queue
            return "queued, not picked up yet"
        return "no record yet (queued and not picked up, or never submitted)"
    if status is not None:
        done, total = status["chunks_done"], status["chunks"]
        rate = status.get("rows_per_second")
        return (f"{progress_bar(done, total)} {done}/{total} chunks, {status['rows']:,} rows, "
                f"{status['elapsed_s']:.0f} s" + (f", {rate:,.0f} rows/s" if rate else ""))
    rows = (record.get("progress") or {}).get("rows")
    attempt = record.get("attempts") or 1
    text = "running" if rows is None else f"running, {rows:,} rows scored"
    return text + (f" (attempt {attempt})" if attempt > 1 else "")


def _decode(content: str) -> dict[str, Any] | None:
    import orjson

    try:
        doc = orjson.loads(base64.b64decode(content))
    except Exception:
        return None
    return doc if isinstance(doc, dict) else None


def _find_result(results, job_id: str, *, consume: bool,
                 accept=None) -> dict[str, Any] | None:
    """The first result message of ``job_id`` (that ``accept`` takes, when given)."""
    from azure.core.exceptions import ResourceNotFoundError

    def wanted(doc: dict[str, Any] | None) -> bool:
        return doc is not None and doc.get("id") == job_id and (accept is None or accept(doc))

    try:
        if not consume:
            for message in results.peek_messages(max_messages=32):
                doc = _decode(message.content)
                if wanted(doc):
                    return doc
            return None
        found = None
        for message in results.receive_messages(max_messages=32, visibility_timeout=30):
            doc = _decode(message.content)
            if found is None and wanted(doc):
                results.delete_message(message)
                found = doc
            else:  # someone else's: visible again at once
                results.update_message(message, visibility_timeout=0)
        return found
    except ResourceNotFoundError:
        return None


def _in_poison(poison, job_id: str) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return any((_decode(m.content) or {}).get("id") == job_id
                   for m in poison.peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return False


def _read_record(blob) -> dict[str, Any] | None:
    import orjson
    from azure.core.exceptions import ResourceNotFoundError

    try:
        doc = orjson.loads(blob.download_blob().readall())
    except ResourceNotFoundError:
        return None
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _report(result: dict[str, Any], as_json: bool) -> int:
    import orjson

    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0 if result.get("status") == "succeeded" else 1
    job_id = result.get("id")
    if result.get("status") != "succeeded":
        error = result.get("error") or {}
        print(f"{job_id} failed: {error.get('code')}: {error.get('message')}")
        return 1
    rows = result.get("rows") or 0
    seconds = (result.get("elapsed_ms") or 0) / 1000
    rate = result.get("rows_per_second")
    print(f"{job_id} succeeded: {rows:,} rows in {seconds:.2f} s"
          + (f" ({rate:,.0f} rows/s)" if rate else "")
          + (f", {result['chunks']} chunks in parallel" if result.get("chunks") else ""))
    model = result.get("model") or {}
    print(f"  model:  {model.get('name')} (version {model.get('version')})")
    if result.get("output_blob"):
        print(f"  output: {result.get('output_container')}/{result['output_blob']}")
    elif "predictions" in result:
        print(f"  predictions: {len(result['predictions'])} in the result message (--json shows them)")
    if result.get("id_generated"):
        print("  (the job id was generated by scorefn)")
    return 0


class _Progress:
    """One updating status line on a terminal; a line per change otherwise."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""
        self.last_time = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text.ljust(len(self.last)))
            self.stream.flush()
        elif not self.last or (text != self.last and now - self.last_time >= 5):
            print(text, file=self.stream, flush=True)
            self.last_time = now
        self.last = text

    def clear(self) -> None:
        if self.tty and self.last:
            self.stream.write("\r" + " " * len(self.last) + "\r")
            self.stream.flush()
