"""Queue triggers run against Azurite with the Functions host's semantics.

The sample host.json sets batchSize 4, maxDequeueCount 2, visibilityTimeout 1 s and
maxPollingInterval 2 s; the sample function records each delivery as blobs under the
message's token (see ``sample_app/sample_routes.py``). ``--queue-lease-seconds`` stands for the
host's 10-minute lease, so that lease expiry shows within a test.
"""

import base64
import json
import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from devhost.process import DevHost
from devhost.queue_runner import lost_ownership, poison_queue_name, receive_batch

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
    assert done["has_pop_receipt"] and done["insertion_time"].endswith("+00:00")  # aware, UTC
    wait_for(lambda: message_count(queue) == 0, timeout=5)


def test_a_failing_message_is_retried_then_moved_to_poison_with_its_original_body(
        queue, poison, results_container):
    token = uuid.uuid4().hex
    queue.send_message(encoded(f"{token} fail"))
    wait_for(lambda: encoded(f"{token} fail") in poison_contents(poison), timeout=15)
    assert sorted(deliveries(results_container, token)) == ["1-started", "2-started"]
    wait_for(lambda: message_count(queue) == 0, timeout=5)


def test_a_message_that_is_not_base64_goes_to_poison_on_first_receipt_without_running(
        queue, poison, host, results_container):
    token = uuid.uuid4().hex
    raw = f"{token} is-not-base64!"  # would be recorded under the token if the function ran
    sent = queue.send_message(raw)
    wait_for(lambda: raw in poison_contents(poison), timeout=10)
    wait_for(lambda: message_count(queue) == 0, timeout=5)
    log = host.log_path.read_text()
    assert log.count(f"message {sent.id} is not valid base64") == 1  # no retries
    assert deliveries(results_container, token) == {}


def test_base64_may_contain_whitespace_as_dotnet_reads_it(queue, results_container):
    token = uuid.uuid4().hex
    text = encoded(f"{token} ok")
    wrapped = " " + "\n".join(text[i:i + 8] for i in range(0, len(text), 8)) + "\r\n\t"
    queue.send_message(wrapped)
    done = wait_for(lambda: deliveries(results_container, token).get("1-done"), timeout=10)
    assert done["body"] == f"{token} ok"


def test_messages_of_a_batch_are_processed_concurrently(queue, results_container):
    # Three: however polls split them, at most newBatchThreshold (2) are in flight after the
    # first receive, so the next receive follows at once.
    tokens = [uuid.uuid4().hex for _ in range(3)]
    for token in tokens:
        queue.send_message(encoded(f"{token} pause"))  # each sleeps 1.5 s
    done = [wait_for(lambda t=t: deliveries(results_container, t).get("1-done"), timeout=15)
            for t in tokens]
    # All three in flight at once: each started before any of them finished.
    assert max(d["started"] for d in done) < min(d["finished"] for d in done)


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


def host_processing(azurite, sample_env, start_host, results_container, command: str,
                    **host_args):
    """A host whose queue holds one message running the sample's ``command``, once that has
    started: (host, queue client, token)."""
    name = unique(command)
    host = start_host({**sample_env, "SAMPLE_QUEUE": name}, **host_args)
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    token = uuid.uuid4().hex
    client.send_message(encoded(f"{token} {command}"))
    wait_for(lambda: "1-started" in deliveries(results_container, token), timeout=10)
    return host, client, token


def test_sigterm_lets_in_flight_messages_finish(azurite, sample_env, start_host,
                                                results_container):
    host, client, token = host_processing(azurite, sample_env, start_host, results_container,
                                          "pause")  # sleeps 1.5 s
    assert host.stop() == 0
    assert "1-done" in deliveries(results_container, token)
    assert message_count(client) == 0


def test_a_poll_is_one_get_messages_request_for_at_most_batch_size_messages(azurite):
    requests = []
    client = QueueClient.from_connection_string(
        azurite.connection_string, unique("poll"),
        raw_request_hook=lambda request: requests.append(request.http_request.method))
    client.create_queue()
    for text in ("a", "b"):
        client.send_message(encoded(text))
    requests.clear()
    assert sorted(m.content for m in receive_batch(client, 4, 30)) == [encoded("a"), encoded("b")]
    assert requests == ["GET"]  # not a second request for the rest of the batch
    requests.clear()
    assert receive_batch(client, 4, 30) == [] and requests == ["GET"]


@pytest.mark.parametrize("queue_name, poison_name", [
    ("orders", "orders-poison"), ("orders-poison", None), ("a" * 56, "a" * 56 + "-poison"),
    ("a" * 57, None)])
def test_a_poison_queue_exists_unless_the_queue_is_one_or_the_name_would_be_too_long(
        queue_name, poison_name):
    assert poison_queue_name(queue_name) == poison_name


@pytest.fixture
def poison_trigger(azurite, sample_env):
    """A trigger queue whose name ends in -poison (so it has no poison queue of its own)."""
    name = f"{unique('dh')}-poison"
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    client.create_queue()
    never = QueueClient.from_connection_string(azurite.connection_string, f"{name}-poison")
    return {**sample_env, "SAMPLE_QUEUE": name}, client, never


def test_on_a_queue_without_poison_queue_a_failed_message_is_retried_only_after_its_lease(
        poison_trigger, start_host, results_container):
    env, client, never = poison_trigger
    start_host(env, lease_seconds=6)
    token = uuid.uuid4().hex
    client.send_message(encoded(f"{token} fail"))
    first = wait_for(lambda: deliveries(results_container, token).get("1-started"), timeout=10)
    second = wait_for(lambda: deliveries(results_container, token).get("2-started"), timeout=15)
    assert second["started"] - first["started"] > 5  # the lease, not visibilityTimeout (1 s)
    time.sleep(1)  # delivery 2 reached maxDequeueCount: still not moved anywhere
    assert message_count(client) == 1 and not queue_exists(never)


def test_on_a_queue_without_poison_queue_an_exhausted_message_is_skipped_and_kept(
        poison_trigger, start_host, results_container):
    env, client, never = poison_trigger
    token = uuid.uuid4().hex
    sent = client.send_message(encoded(f"{token} ok"))
    for _ in range(2):  # two earlier deliveries that were never completed
        [message] = client.receive_messages(visibility_timeout=30, max_messages=1)
        client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    host = start_host(env)
    wait_for(lambda: f"message {sent.id} dequeued 3 times" in host.log_path.read_text(),
             timeout=10)
    assert deliveries(results_container, token) == {}
    assert message_count(client) == 1 and not queue_exists(never)


def test_on_a_queue_without_poison_queue_a_message_that_is_not_base64_is_kept(
        poison_trigger, start_host):
    env, client, never = poison_trigger
    host = start_host(env)
    sent = client.send_message("not base64!")
    wait_for(lambda: f"message {sent.id} is not valid base64" in host.log_path.read_text(),
             timeout=10)
    time.sleep(4)  # longer than visibilityTimeout plus a polling interval: no second receipt
    assert host.log_path.read_text().count(f"message {sent.id} is not valid base64") == 1
    assert message_count(client) == 1 and not queue_exists(never)


def test_lease_renewal_stops_once_the_message_is_gone(azurite, sample_env, start_host,
                                                     results_container):
    name = unique("gone")
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    host = start_host({**sample_env, "SAMPLE_QUEUE": name}, lease_seconds=2)  # renewed each 1 s
    token = uuid.uuid4().hex
    sent = client.send_message(encoded(f"{token} slow"))  # blocks for a minute
    wait_for(lambda: "1-started" in deliveries(results_container, token), timeout=10)
    client.clear_messages()
    gone = f"message {sent.id} is gone or another receiver holds it"
    wait_for(lambda: gone in host.log_path.read_text(), timeout=10)
    time.sleep(2.5)  # two more renewal periods, in which nothing more may be tried
    log = host.log_path.read_text()
    host.kill()
    assert log.count(f"message {sent.id}") == 1  # one failed renewal, then no more attempts
    assert f"message {sent.id} is gone or another receiver holds it" in log


def test_the_lease_is_lost_on_pop_receipt_mismatch_or_a_missing_message_or_queue(azurite):
    client = QueueClient.from_connection_string(azurite.connection_string, unique("own"))
    client.create_queue()
    client.send_message(encoded("x"))
    [message] = client.receive_messages(visibility_timeout=30, max_messages=1)

    def error(**change):
        try:
            client.update_message(message.id, change.get("pop_receipt", message.pop_receipt),
                                  visibility_timeout=change.get("visibility_timeout", 30))
        except HttpResponseError as exc:
            return exc
        raise AssertionError("the update succeeded")

    mismatch, out_of_range = error(pop_receipt="AAAAAAAAAAAA"), error(visibility_timeout=8 * 86400)
    client.clear_messages()
    message_gone = error()
    client.delete_queue()
    queue_gone = error()
    assert lost_ownership(mismatch) and lost_ownership(message_gone) and lost_ownership(queue_gone)
    assert not lost_ownership(out_of_range)


def test_sigterm_waits_for_a_message_that_outlasts_the_http_grace(azurite, sample_env,
                                                                  start_host, results_container):
    host, client, token = host_processing(azurite, sample_env, start_host, results_container,
                                          "linger")  # sleeps 7 s
    assert host.stop(timeout=30) == 0
    assert "1-done" in deliveries(results_container, token)
    assert message_count(client) == 0  # deleted: it will not be delivered again


def test_a_message_still_running_at_the_shutdown_timeout_is_abandoned_with_status_1(
        azurite, sample_env, start_host, results_container):
    host, client, token = host_processing(azurite, sample_env, start_host, results_container,
                                          "slow", shutdown_timeout=2)  # blocks for a minute
    assert host.stop(timeout=20) == 1  # abandoned at 2 s; waiting out the minute would be a kill
    log = host.log_path.read_text()
    assert f"SHUTDOWN INCOMPLETE: 1 message(s) of queue {client.queue_name}" in log
