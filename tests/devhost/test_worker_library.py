"""Driving Microsoft's worker library: what devhost sends it and reads back (the end-to-end
behaviour is checked by test_http.py and test_queues.py against both invokers)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from devhost.invocation import dotnet_datetimeoffset

from .conftest import worker_library_unavailable

needs_library = pytest.mark.skipif(worker_library_unavailable() is not None,
                                   reason=f"worker library unavailable: "
                                          f"{worker_library_unavailable()}")


def test_times_are_written_as_json_net_writes_a_datetimeoffset():
    utc = UTC
    assert dotnet_datetimeoffset(datetime(2024, 5, 1, 12, 34, 56, tzinfo=utc)) == \
        "2024-05-01T12:34:56+00:00"
    assert dotnet_datetimeoffset(datetime(2024, 5, 1, 12, 34, 56, 120000, tzinfo=utc)) == \
        "2024-05-01T12:34:56.12+00:00"
    later = timezone(timedelta(hours=2))
    assert dotnet_datetimeoffset(datetime(2024, 5, 1, 14, 0, 0, tzinfo=later)) == \
        "2024-05-01T12:00:00+00:00"


@needs_library
def test_the_message_classes_are_functionrpc_and_hold_what_the_library_uses():
    from devhost.worker_library import REQUIRED_MESSAGES, load_protos

    protos, version = load_protos()
    assert version
    assert protos.InvocationRequest.DESCRIPTOR.full_name == \
        "AzureFunctionsRpcMessages.InvocationRequest"
    assert all(hasattr(protos, name) for name in REQUIRED_MESSAGES)
    # Fields the library reads or writes, by name (the 2020 message set on PyPI lacks these).
    fields = {f.name for f in protos.RpcFunctionMetadata.DESCRIPTOR.fields}
    assert {"function_id", "raw_bindings", "retry_options", "properties"} <= fields
    assert "retry_context" in {f.name for f in protos.InvocationRequest.DESCRIPTOR.fields}


@needs_library
def test_queue_metadata_is_decoded_by_azure_functions_as_sent():
    # The metadata devhost builds goes through the worker's own conversion (Datum) and
    # azure.functions' QueueMessageInConverter: a wrong format would come out as None.
    from azure.functions.queue import QueueMessageInConverter
    from azure_functions_runtime.bindings.datumdef import Datum

    from devhost.worker_library import load_protos

    P, _ = load_protos()
    inserted = datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)
    metadata = {"Id": P.TypedData(string="m-1"), "DequeueCount": P.TypedData(json="3"),
                "InsertionTime": P.TypedData(json=f'"{dotnet_datetimeoffset(inserted)}"'),
                "PopReceipt": P.TypedData(string="pr")}
    message = QueueMessageInConverter.decode(
        Datum.from_typed_data(P.TypedData(string="body")),
        trigger_metadata={k: Datum.from_typed_data(v) for k, v in metadata.items()})
    assert (message.id, message.get_body(), message.dequeue_count, message.insertion_time,
            message.pop_receipt) == ("m-1", b"body", 3, inserted, "pr")


@needs_library
def test_cookies_are_written_back_with_the_attributes_given():
    from devhost.worker_library import load_protos, set_cookie

    P, _ = load_protos()
    plain = P.RpcHttpCookie(name="a", value="1", domain=P.NullableString(value=""),
                            path=P.NullableString(value=""), secure=P.NullableBool(value=False))
    assert set_cookie(plain, P) == "a=1"
    full = P.RpcHttpCookie(name="s", value="x", path=P.NullableString(value="/api"),
                           secure=P.NullableBool(value=True),
                           http_only=P.NullableBool(value=True),
                           max_age=P.NullableDouble(value=60),
                           same_site=P.RpcHttpCookie.SameSite.Strict)
    assert set_cookie(full, P) == "s=x; max-age=60; path=/api; secure; samesite=strict; httponly"
