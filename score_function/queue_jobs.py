"""Queue triggers for batch scoring jobs: hand the message to the app's job runner, nothing else.

Returning normally deletes the message (the job succeeded, or failed permanently and its
``failed`` result was sent); raising makes the host retry it after ``visibilityTimeout``
and, after ``maxDequeueCount`` deliveries, move it to ``<queue>-poison``. The scoring core
is imported on the first message, not when the app is indexed.

Jobs on ``%SCORE_QUEUE_NAME%``, and job messages that exhausted their retries on its poison
queue (the job gets its one ``failed`` result); the chunks of large jobs split across instances
on ``%CHUNK_QUEUE_NAME%``, and chunk messages that exhausted their retries on its poison queue
(their job is failed, so that nobody waits for it forever).
"""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%SCORE_QUEUE_NAME%", connection="AzureWebJobsStorage")
def score_job(msg: func.QueueMessage) -> None:
    """Run one batch scoring job (see shared/batch/messages.py and results.py for the schemas)."""
    from shared.app import get_app

    get_app().jobs.handle(msg.get_body(), message_id=msg.id, dequeue_count=msg.dequeue_count or 1)


@bp.queue_trigger(arg_name="msg", queue_name="%SCORE_QUEUE_NAME%-poison",
                  connection="AzureWebJobsStorage")
def job_poisoned(msg: func.QueueMessage) -> None:
    """A job whose message failed on every delivery: send its ``failed`` result (``job_failed``)."""
    from shared.app import get_app

    get_app().jobs.handle_poison(msg.get_body(), message_id=msg.id)


@bp.queue_trigger(arg_name="msg", queue_name="%CHUNK_QUEUE_NAME%", connection="AzureWebJobsStorage")
def score_chunk(msg: func.QueueMessage) -> None:
    """Score one chunk of a fanned-out job (see shared/batch/fanout/)."""
    from shared.app import get_app

    get_app().jobs.chunk_worker.handle(msg.get_body(), message_id=msg.id,
                                       dequeue_count=msg.dequeue_count or 1)


@bp.queue_trigger(arg_name="msg", queue_name="%CHUNK_QUEUE_NAME%-poison",
                  connection="AzureWebJobsStorage")
def chunk_poisoned(msg: func.QueueMessage) -> None:
    """A chunk that failed on every delivery: fail its job with ``chunk_failed``."""
    from shared.app import get_app

    get_app().jobs.chunk_worker.handle_poison(msg.get_body(), message_id=msg.id)
