"""Queue triggers: score mini-batches from "minibatches"; record what lands in the poison queue.

A failed attempt with retries left raises, so the host redelivers the message after
host.json's visibilityTimeout; the worker completes the message itself when the
mini-batch is done for good (scored, or failed after max_retries retries). When its ledger
append may have completed a ledger shard, the job's orchestration gets an event so that it
checks at once instead of at its next timer.
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

from shared.jobs.context import job_store, minibatch_worker
from shared.jobs.messages import InvalidMessage, MiniBatchMessage, poison_queue_name
from shared.jobs.monitor import SHARD_FULL_EVENT, ShardFullHints
from shared.jobs.worker import WorkResult
from shared.layout import MINIBATCH_QUEUE

bp = df.Blueprint()
log = logging.getLogger("batchfn.scoring")

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


@cache
def _hints() -> ShardFullHints:
    return ShardFullHints(job_store())


@bp.queue_trigger(arg_name="msg", queue_name=MINIBATCH_QUEUE, connection="AzureWebJobsStorage")
@bp.durable_client_input(client_name="client")
async def score_minibatch(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    """Score one mini-batch message (the blocking work runs in a worker thread)."""
    body = msg.get_body()
    try:
        result = await asyncio.to_thread(minibatch_worker(HOST_JSON).process, body,
                                         msg.dequeue_count or 1)
    except InvalidMessage as exc:
        log.error("dropping a message that is not a mini-batch: %s", exc)
        return
    log.info("mini-batch message %s: %s %s", msg.id, result.action, result.detail)
    await _hint_if_shard_full(client, MiniBatchMessage.decode(body), result)


async def _hint_if_shard_full(client: df.DurableOrchestrationClient, message: MiniBatchMessage,
                              result: WorkResult) -> None:
    if result.ledger_blocks is None:
        return
    try:
        if await asyncio.to_thread(_hints().may_complete_shard, message.job, message.index,
                                   result.ledger_blocks):
            await client.raise_event(message.job, SHARD_FULL_EVENT)
    except Exception as exc:  # noqa: BLE001 - only a hint: the orchestrator's timer still runs
        log.info("job %s: no shard-full hint sent (%s)", message.job, exc)


@bp.queue_trigger(arg_name="msg", queue_name=poison_queue_name(),
                  connection="AzureWebJobsStorage")
def record_poisoned_minibatch(msg: func.QueueMessage) -> None:
    """Record a mini-batch whose message failed every delivery, so its job can finish."""
    try:
        result = minibatch_worker(HOST_JSON).record_poison(msg.get_body())
    except InvalidMessage as exc:
        log.error("dropping a poisoned message that is not a mini-batch: %s", exc)
        return
    log.warning("poisoned mini-batch message %s: %s %s", msg.id, result.action, result.detail)
