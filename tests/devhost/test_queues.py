"""Queue triggers run against Azurite with the Functions host's semantics.

The sample host.json sets batchSize 4, maxDequeueCount 2, visibilityTimeout 1 s and
maxPollingInterval 2 s; the sample function records each delivery as blobs under the
message's token (see ``sample_app/sample_routes.py``).
"""

import base64
import json
import time
import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from devhost.process import DevHost

from .conftest import SAMPLE_APP, unique, wait_for


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def queue_exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
        return True
    except ResourceNotFoundError:
        return False


def message_count(client: QueueClient) -> int:
    return client.get_queue_properties().approximate_message_count


def deliveries(container, token: str) -> dict[str, dict]:
    """What the function recorded for ``token``: ``{"1-started": {...}, "1-done": {...}, ...}``."""
    return {b.name.split("/", 1)[1]: json.loads(container.download_blob(b.name).readall())
            for b in container.list_blobs(name_starts_with=f"{token}/")}


def poison_contents(client: QueueClient) -> list[str]:
    if not queue_exists(client):
        return []
    return [m.content for m in client.peek_messages(max_messages=32)]


@pytest.fixture(scope="module")
def queue_name():
    return unique("devhost")


@pytest.fixture(scope="module")
def host(sample_env, queue_name, tmp_path_factory):
    log = tmp_path_factory.mktemp("queues") / "devhost.log"
    with DevHost(SAMPLE_APP, {**sample_env, "SAMPLE_QUEUE": queue_name}, lease_seconds=30,
                 log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def queue(host, azurite, queue_name):
    client = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    assert queue_exists(client)  # the host created its trigger queue before it was ready
    return client


@pytest.fixture(scope="module")
def poison(azurite, queue_name):
    return QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")


def test_a_message_is_passed_with_its_metadata_and_deleted_after_success(queue, results_container):
    token = uuid.uuid4().hex
    sent = queue.send_message(encoded(f"{token} ok"))
    done = wait_for(lambda: deliveries(results_container, token).get("1-done"), timeout=10)
    assert (done["id"], done["body"], done["dequeue_count"]) == (sent.id, f"{token} ok", 1)
    assert done["has_pop_receipt"] and done["insertion_time"]
    wait_for(lambda: message_count(queue) == 0, timeout=5)


def test_a_failing_message_is_retried_then_moved_to_poison_with_its_original_body(
        queue, poison, results_container):
    token = uuid.uuid4().hex
    queue.send_message(encoded(f"{token} fail"))
    wait_for(lambda: encoded(f"{token} fail") in poison_contents(poison), timeout=15)
    assert sorted(deliveries(results_container, token)) == ["1-started", "2-started"]
    wait_for(lambda: message_count(queue) == 0, timeout=5)


def test_a_message_that_is_not_base64_fails_each_delivery_and_ends_in_poison(queue, poison, host):
    raw = f"not base64 {uuid.uuid4().hex} !"
    sent = queue.send_message(raw)
    wait_for(lambda: raw in poison_contents(poison), timeout=15)
    log = host.log_path.read_text()
    assert log.count(f"message {sent.id} is not valid base64") == 2  # two failed deliveries
    wait_for(lambda: message_count(queue) == 0, timeout=5)


def test_messages_of_a_batch_are_processed_concurrently(queue, results_container):
    # Three: however polls split them, at most newBatchThreshold (2) are in flight after the
    # first receive, so the next receive follows at once.
    tokens = [uuid.uuid4().hex for _ in range(3)]
    for token in tokens:
        queue.send_message(encoded(f"{token} pause"))  # each sleeps 1.5 s
    done = [wait_for(lambda t=t: deliveries(results_container, t).get("1-done"), timeout=15)
            for t in tokens]
    starts = [d["started"] for d in done]
    assert max(starts) - min(starts) < 1.0


def test_a_message_dequeued_more_than_max_dequeue_count_goes_to_poison_unrun(
        azurite, sample_env, start_host, results_container):
    name = unique("overdue")
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    client.create_queue()
    token = uuid.uuid4().hex
    client.send_message(encoded(f"{token} ok"))
    for _ in range(2):  # two earlier deliveries that were never completed
        [message] = client.receive_messages(visibility_timeout=30, max_messages=1)
        client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    start_host({**sample_env, "SAMPLE_QUEUE": name})
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{name}-poison")
    wait_for(lambda: encoded(f"{token} ok") in poison_contents(poison), timeout=10)
    assert deliveries(results_container, token) == {}


def test_a_message_in_flight_when_the_host_is_killed_is_processed_after_its_lease_expires(
        azurite, sample_env, start_host, results_container):
    name = unique("crash")
    env = {**sample_env, "SAMPLE_QUEUE": name}
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    first = start_host(env, lease_seconds=2)  # renewed every second while the function runs
    token = uuid.uuid4().hex
    client.send_message(encoded(f"{token} slow"))  # blocks for a minute on delivery 1
    wait_for(lambda: "1-started" in deliveries(results_container, token), timeout=10)
    time.sleep(3.5)  # longer than the lease: only its renewal keeps the message hidden
    assert "2-started" not in deliveries(results_container, token)
    first.kill()
    start_host(env, lease_seconds=2)
    done = wait_for(lambda: deliveries(results_container, token).get("2-done"), timeout=15)
    assert done["dequeue_count"] == 2
    assert "1-done" not in deliveries(results_container, token)
    wait_for(lambda: message_count(client) == 0, timeout=5)


def test_sigterm_lets_in_flight_messages_finish(azurite, sample_env, start_host,
                                                results_container):
    name = unique("stop")
    host = start_host({**sample_env, "SAMPLE_QUEUE": name})
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    token = uuid.uuid4().hex
    client.send_message(encoded(f"{token} pause"))  # sleeps 1.5 s
    wait_for(lambda: "1-started" in deliveries(results_container, token), timeout=10)
    assert host.stop() == 0
    assert "1-done" in deliveries(results_container, token)
    assert message_count(client) == 0
