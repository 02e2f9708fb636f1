"""Queue triggers of the control app: record what lands in the mini-batch poison queues.

A scoring app's host moves a mini-batch message to its queue's poison queue after its last
failed delivery; recording it here keeps the scoring apps, and their GPUs, scaled to zero
meanwhile (shared/control/poison.py). One trigger per scoring app of this installation:
the main app's `minibatches-poison`, and `minibatches-<profile>-poison` for each scoring
profile with an app of its own (BATCHFN_SCORING_PROFILES).
"""

from __future__ import annotations

import logging
from pathlib import Path

import azure.functions as func

from shared.contract.layout import poison_queue
from shared.contract.messages import InvalidMessage
from shared.control.computes import ScoringProfiles
from shared.control.context import job_store
from shared.control.poison import record_poisoned
from shared.storage.queue_clients import max_dequeue_count

bp = func.Blueprint()
log = logging.getLogger("batchfn.control")

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


def record_poisoned_minibatch(msg: func.QueueMessage) -> None:
    """Record a mini-batch whose message failed every delivery, so its job can finish."""
    try:
        result = record_poisoned(job_store(), msg.get_body(), max_dequeue_count(HOST_JSON))
    except InvalidMessage as exc:
        log.error("dropping a poisoned message that is not a mini-batch: %s", exc)
        return
    log.warning("poisoned mini-batch message %s: %s", msg.id, result)


for _queue in ScoringProfiles.from_settings().queues():
    # Function names are unique per app: the main queue keeps the plain name.
    _name = "record_poisoned_minibatch" + _queue.removeprefix("minibatches").replace("-", "_")
    bp.function_name(_name)(bp.queue_trigger(
        arg_name="msg", queue_name=poison_queue(_queue),
        connection="AzureWebJobsStorage")(record_poisoned_minibatch))
