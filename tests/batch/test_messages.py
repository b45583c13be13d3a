"""The job message schema: inline and blob jobs, defaults, ids, and a typed error for each fault."""

from __future__ import annotations

import orjson
import pytest

from shared.batch.messages import BlobJob, InlineJob, decode_message, job_identity, parse_job
from shared.errors import InvalidJson, InvalidPayload, PayloadTooLarge


def parse(doc, message_id="m-1", allowed=("inputs", "outputs")):
    return parse_job(doc, job_identity(doc, message_id), batch_container="batch",
                     allowed_containers=allowed)


def test_inline_jobs_keep_the_http_body_shape():
    job = parse({"id": "job-42", "endpoint": "churn", "rows": [[1, 2]], "options": {"raw_score": True}})
    assert isinstance(job, InlineJob)
    assert job.identity.job_id == "job-42" and not job.identity.generated
    assert job.document == {"rows": [[1, 2]], "options": {"raw_score": True}}


def test_blob_jobs_default_to_the_batch_container_and_the_input_format():
    job = parse({"id": "j", "endpoint": "churn", "input": {"blob": "in/x.CSV"}, "id_column": "k"})
    assert isinstance(job, BlobJob)
    assert (job.input.container, job.input.blob, job.input.format) == ("batch", "in/x.CSV", "csv")
    assert (job.output.container, job.output.blob, job.output.format) == \
        ("batch", "predictions/j.csv", "csv")
    assert job.id_column == "k"


def test_output_format_and_containers_can_be_given():
    job = parse({"endpoint": "churn", "input": {"blob": "x.jsonl", "container": "inputs"},
                 "output": {"blob": "y.out", "container": "outputs", "format": "csv"}})
    assert (job.input.container, job.input.format) == ("inputs", "jsonl")
    assert (job.output.container, job.output.blob, job.output.format) == ("outputs", "y.out", "csv")
    no_blob = parse({"id": "j2", "endpoint": "c", "input": {"blob": "x.ndjson"},
                     "output": {"format": "csv"}})
    assert no_blob.output.blob == "predictions/j2.csv"


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_container_not_opened_to_batch_jobs_is_refused(where):
    # Senders act with the app's identity, which may also write models and logs.
    doc = {"endpoint": "churn", "input": {"blob": "x.csv"}, "output": {"blob": "y.csv"}}
    doc[where] = {**doc[where], "container": "models"}
    with pytest.raises(InvalidPayload) as err:
        parse(doc)
    assert err.value.code == "container_not_allowed" and f"{where}.container" in str(err.value)
    assert parse(doc, allowed=("models",)).input.blob == "x.csv"  # only when opened to jobs


def test_a_missing_id_is_derived_from_the_message_id_so_redeliveries_share_it():
    first = job_identity({"endpoint": "churn"}, "5f1c-77")
    assert first.generated and first == job_identity({"endpoint": "churn"}, "5f1c-77")
    assert job_identity(None, None).job_id != job_identity(None, None).job_id


@pytest.mark.parametrize("doc,code", [
    ({"endpoint": "churn"}, "invalid_message"),
    ({"rows": [[1]]}, "invalid_message"),
    ({"endpoint": 7, "rows": [[1]]}, "invalid_message"),
    ({"id": 5, "endpoint": "churn", "rows": [[1]]}, "invalid_job_id"),
    ({"id": "has space", "endpoint": "churn", "rows": [[1]]}, "invalid_job_id"),
    ({"endpoint": "churn", "rows": [[1]], "input": {"blob": "x.csv"}}, "invalid_message"),
    ({"endpoint": "churn", "input": {"blob": "x.csv"}, "extra": 1}, "invalid_message"),
    ({"endpoint": "churn", "input": "x.csv"}, "invalid_message"),
    ({"endpoint": "churn", "input": {"blob": "../x.csv"}}, "invalid_blob_name"),
    ({"endpoint": "churn", "input": {"blob": "/x.csv"}}, "invalid_blob_name"),
    ({"endpoint": "churn", "input": {"blob": "x.parquet"}}, "invalid_format"),
    ({"endpoint": "churn", "input": {"blob": "x.csv", "format": "xml"}}, "invalid_format"),
    ({"endpoint": "churn", "input": {"blob": "x.csv", "container": "Bad_Name"}}, "invalid_message"),
    ({"endpoint": "churn", "input": {"blob": "x.csv"}, "output": {"blob": "x.csv"}}, "invalid_message"),
    ({"endpoint": "churn", "input": {"blob": "x.csv"}, "output": {"blob": "jobs/x.json"}},
     "invalid_message"),
    ({"endpoint": "churn", "input": {"blob": "x.csv"}, "options": {"pred_contrib": True}},
     "invalid_options"),
    ({"endpoint": "churn", "input": {"blob": "x.csv"}, "id_column": ""}, "invalid_message"),
])
def test_schema_faults_have_codes(doc, code):
    with pytest.raises(InvalidPayload) as err:
        parse(doc)
    assert err.value.code == code and err.value.permanent


def test_undecodable_messages_are_typed_errors():
    with pytest.raises(InvalidJson):
        decode_message(b"{not json")
    with pytest.raises(InvalidPayload) as err:
        decode_message(b"[1, 2]")
    assert err.value.code == "invalid_message"
    with pytest.raises(PayloadTooLarge) as err:
        decode_message(orjson.dumps({"rows": [[1.5] * 10] * 5000}))
    assert err.value.code == "message_too_large"


def test_the_largest_message_accepted_still_fits_a_queue_message_once_base64_encoded():
    import base64

    from shared.batch.messages import MAX_MESSAGE_BYTES

    largest = orjson.dumps({"endpoint": "churn", "rows": [[1]] * 1})
    largest += b" " * (MAX_MESSAGE_BYTES - len(largest))
    assert decode_message(largest)["endpoint"] == "churn"
    assert len(base64.b64encode(largest)) <= 64 * 1024  # the queue's limit on message text
    with pytest.raises(PayloadTooLarge):
        decode_message(largest + b" ")


def test_the_job_digest_is_what_defines_the_job_not_how_it_is_written():
    from shared.batch.messages import job_digest

    job = {"id": "j", "endpoint": "churn", "input": {"blob": "a.csv", "format": "csv"},
           "options": {"raw_score": True}}
    same = orjson.loads(b'{"options": {"raw_score": true}, "input": {"format": "csv", '
                        b'"blob": "a.csv"},   "endpoint": "churn", "id": "j"}')
    assert job_digest(job) == job_digest(same) == job_digest({**job, "id": "other-id"})
    for change in ({"input": {"blob": "b.csv", "format": "csv"}}, {"key": "tenant-1"},
                   {"options": {"raw_score": False}}, {"endpoint": "price"}, {"id_column": "k"}):
        assert job_digest({**job, **change}) != job_digest(job), change
    assert job_digest(None, b"not json") == job_digest(None, b"not json") != \
        job_digest(None, b"not json!")
