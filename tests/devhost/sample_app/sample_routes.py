"""The sample app's functions: each exists to exercise one behaviour of the host."""

import asyncio
import json
import logging
import os
import time

import azure.functions as func
from azure.functions.queue import QueueMessage

bp = func.Blueprint()


def _json(doc, status=200):
    return func.HttpResponse(json.dumps(doc), status_code=status, mimetype="application/json")


@bp.route(route="echo/{name}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    """What the function saw of the request; ``?status=`` sets the status."""
    response = _json({"name": req.route_params["name"], "method": req.method, "url": req.url,
                      "params": dict(req.params), "body": req.get_body().decode("utf-8"),
                      "content_type": req.headers.get("content-type"),
                      "x_custom": req.headers.get("X-Custom")},
                     status=int(req.params.get("status", "200")))
    response.headers["x-echo"] = req.route_params["name"]
    response.headers.add_header("set-cookie", "a=1")
    response.headers.add_header("set-cookie", "b=2")
    return response


@bp.route(route="text", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def text(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("plain", mimetype="text/plain", charset="utf-8")


@bp.route(route="items/{slug}", auth_level=func.AuthLevel.ANONYMOUS)
def item_by_slug(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"slug:{req.route_params['slug']}")


@bp.route(route="items/{id:int}", auth_level=func.AuthLevel.ANONYMOUS)
def item_by_id(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"id:{req.route_params['id']}")


@bp.route(route="items/latest", auth_level=func.AuthLevel.ANONYMOUS)
def latest_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("latest")


@bp.route(route="secure", methods=["GET"])  # the app's default auth level: function
def secure(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("secret")


@bp.route(route="nothing", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def nothing(req: func.HttpRequest) -> func.HttpResponse:
    """Returns what the Python worker cannot encode (None, or bytes with ?bytes)."""
    return b"raw" if "bytes" in req.params else None


@bp.route(route="ops", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def ops(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@bp.route(route="async", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_route(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    await asyncio.sleep(0.01)
    return func.HttpResponse(f"async:{context.function_name}")


@bp.route(route="sleep", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def sleep(req: func.HttpRequest) -> func.HttpResponse:
    logging.getLogger("sample").warning("sleep started")  # tests wait for this line
    time.sleep(float(req.params.get("seconds", "1")))
    return func.HttpResponse("slept")


@bp.route(route="boom", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@bp.route(route="context", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def show_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    trace = context.trace_context
    return _json({"invocation_id": context.invocation_id, "function_name": context.function_name,
                  "function_directory": context.function_directory,
                  "trace_parent": trace.trace_parent, "trace_state": trace.trace_state,
                  "attributes": dict(trace.attributes)})


@bp.route(route="setting/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def setting(req: func.HttpRequest) -> func.HttpResponse:
    """An app setting's value (only SAMPLE_* ones), to check how settings reach the app."""
    name = req.route_params["name"]
    if not name.startswith("SAMPLE_") or name not in os.environ:
        return func.HttpResponse(status_code=404)
    return func.HttpResponse(os.environ[name])


def _record(token: str, name: str, doc: dict) -> None:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
    container = service.get_container_client(os.environ["SAMPLE_RESULTS_CONTAINER"])
    container.upload_blob(f"{token}/{name}", json.dumps(doc), overwrite=True)


@bp.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
def record_message(msg: QueueMessage, context: func.Context) -> None:
    """Messages are ``"<token> <command>"``; each delivery is recorded as blobs under <token>/.

    ``fail`` raises; ``slow`` blocks for a minute on its first delivery; ``pause`` sleeps 1.5 s;
    ``linger`` sleeps 7 s (longer than devhost's 5 s HTTP shutdown grace).
    """
    body = msg.get_body().decode("utf-8")
    token, _, command = body.partition(" ")
    attempt = msg.dequeue_count
    doc = {"id": msg.id, "body": body, "dequeue_count": attempt,
           "has_pop_receipt": bool(msg.pop_receipt),
           "insertion_time": msg.insertion_time.isoformat() if msg.insertion_time else None,
           "invocation_id": context.invocation_id, "started": time.time()}
    _record(token, f"{attempt}-started", doc)
    if command == "fail":
        raise RuntimeError("asked to fail")
    if command == "slow" and attempt == 1:
        time.sleep(60)
    if command == "pause":
        time.sleep(1.5)
    if command == "linger":
        time.sleep(7)
    _record(token, f"{attempt}-done", {**doc, "finished": time.time()})


@bp.timer_trigger(arg_name="timer", schedule=os.environ.get("SAMPLE_TIMER_SCHEDULE", "0 0 0 1 1 *"),
                  run_on_startup=os.environ.get("SAMPLE_TIMER_RUN_ON_STARTUP") == "true",
                  use_monitor=os.environ.get("SAMPLE_TIMER_USE_MONITOR") == "true")
def tick(timer: func.TimerRequest, context: func.Context) -> None:
    """Each run is recorded as blobs under SAMPLE_TIMER_TOKEN/ (without it the run does nothing,
    so hosts of other tests are not disturbed; by default the schedule is once a year, at New
    Year). A run sleeps SAMPLE_TIMER_SECONDS, and fails when SAMPLE_TIMER_FAIL is "true".
    The schedule, runOnStartup and useMonitor come from SAMPLE_TIMER_* settings, read when the
    app is indexed."""
    token = os.environ.get("SAMPLE_TIMER_TOKEN")
    if not token:
        return
    started = time.time()
    doc = {"past_due": timer.past_due, "schedule_status": timer.schedule_status,
           "schedule": timer.schedule, "invocation_id": context.invocation_id,
           "started": started}
    _record(token, f"{started:.6f}-started", doc)
    time.sleep(float(os.environ.get("SAMPLE_TIMER_SECONDS", "0")))
    if os.environ.get("SAMPLE_TIMER_FAIL") == "true":
        raise RuntimeError("asked to fail")
    _record(token, f"{started:.6f}-done", {**doc, "finished": time.time()})
