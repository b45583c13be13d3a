"""Queue trigger for batch scoring jobs: hand the message to ``shared.batch``, nothing else.

Returning normally deletes the message (the job succeeded, or failed permanently and its
``failed`` result was sent); raising makes the host retry it after ``visibilityTimeout``
and, after ``maxDequeueCount`` deliveries, move it to ``<queue>-poison``. The scoring core
is imported on the first message, not when the app is indexed.
"""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%SCORE_QUEUE_NAME%", connection="AzureWebJobsStorage")
def score_job(msg: func.QueueMessage) -> None:
    """Run one batch scoring job (see shared/batch.py for the message and result schemas)."""
    from shared.batch import handle_message

    handle_message(msg.get_body(), message_id=msg.id, dequeue_count=msg.dequeue_count or 1)
