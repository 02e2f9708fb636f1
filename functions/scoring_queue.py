"""Queue trigger: score mini-batches from "minibatches" (or the queue of the scoring profile
this app serves).

A failed attempt with retries left raises, so the host redelivers the message after
host.json's visibilityTimeout; the handler completes the message itself when the
mini-batch is done for good (scored, or failed after max_retries retries). Its ledger line
is all the control app needs: the job's monitor reads the ledger (the scoring app talks
only to queues and blobs, never to the Durable task hub). What lands in the poison queue
is recorded by the control app (functions/poison_queue.py), so that a poison message never
wakes a GPU.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import azure.functions as func

from shared.contract.messages import InvalidMessage
from shared.scoring.context import minibatch_handler, scoring_executor
from shared.scoring.scoring_profile import served_queue

bp = func.Blueprint()
log = logging.getLogger("batchfn.scoring")

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
QUEUE = served_queue()  # "minibatches", or the queue of this app's scoring profile


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE, connection="AzureWebJobsStorage")
async def score_minibatch(msg: func.QueueMessage) -> None:
    """Score one mini-batch message (the blocking work runs in a scoring thread)."""
    body = msg.get_body()
    count = msg.dequeue_count or 1
    handler = minibatch_handler(HOST_JSON)
    try:
        # Held (in the heartbeats) from now on, even while it waits for a thread.
        holding = handler.hold(body, count)
        result = await asyncio.get_running_loop().run_in_executor(
            scoring_executor(), handler.process, body, count, holding)
    except InvalidMessage as exc:
        log.error("dropping a message that is not a mini-batch: %s", exc)
        return
    log.info("mini-batch message %s: %s %s", msg.id, result.action, result.detail)
