"""Queue triggers: score mini-batches from "minibatches"; record what lands in the poison queue.

A failed attempt with retries left raises, so the host redelivers the message after
host.json's visibilityTimeout; the handler completes the message itself when the
mini-batch is done for good (scored, or failed after max_retries retries). Its ledger line
is all the control app needs: the job's monitor reads the ledger (the scoring app talks
only to queues and blobs, never to the Durable task hub).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import azure.functions as func

from shared.contract.layout import MINIBATCH_QUEUE, poison_queue
from shared.contract.messages import InvalidMessage
from shared.scoring.context import minibatch_handler

bp = func.Blueprint()
log = logging.getLogger("batchfn.scoring")

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


@bp.queue_trigger(arg_name="msg", queue_name=MINIBATCH_QUEUE, connection="AzureWebJobsStorage")
async def score_minibatch(msg: func.QueueMessage) -> None:
    """Score one mini-batch message (the blocking work runs in a worker thread)."""
    body = msg.get_body()
    count = msg.dequeue_count or 1
    handler = minibatch_handler(HOST_JSON)
    try:
        # Held (in the heartbeats) from now on, even while it waits for a thread.
        holding = handler.hold(body, count)
        result = await asyncio.to_thread(handler.process, body, count, holding)
    except InvalidMessage as exc:
        log.error("dropping a message that is not a mini-batch: %s", exc)
        return
    log.info("mini-batch message %s: %s %s", msg.id, result.action, result.detail)


@bp.queue_trigger(arg_name="msg", queue_name=poison_queue(),
                  connection="AzureWebJobsStorage")
def record_poisoned_minibatch(msg: func.QueueMessage) -> None:
    """Record a mini-batch whose message failed every delivery, so its job can finish."""
    try:
        result = minibatch_handler(HOST_JSON).record_poison(msg.get_body())
    except InvalidMessage as exc:
        log.error("dropping a poisoned message that is not a mini-batch: %s", exc)
        return
    log.warning("poisoned mini-batch message %s: %s %s", msg.id, result.action, result.detail)
