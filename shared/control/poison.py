"""Mini-batch messages that failed on every delivery, recorded by the control app.

A scoring host moves a mini-batch message to the poison queue after its last failed
delivery (a host that crashed while scoring it, storage errors outside run()). The control
app records it, not the scoring app: a poison message must not wake a GPU replica. A
mini-batch already recorded stays as it is, one whose part blob exists is restored from it
(its ledger line was lost), and any other fails with its inputs listed, so that its job
can finish.
"""

from __future__ import annotations

from dataclasses import replace

from shared.contract.errors import NotFound
from shared.contract.ledger import Completion
from shared.contract.messages import MiniBatchMessage
from shared.contract.timestamps import utc_now
from shared.storage.failure_records import POISONED, whole, write_record
from shared.storage.job_store import JobStore
from shared.storage.ledger_blobs import first_completion, record_completion
from shared.storage.parts import restored_completion

RECORDER = "poison-recorder"  # the ledger line's host: no scoring host recorded it
POISONED_ERROR = ("the message failed on every delivery (host crashed or storage errors); "
                  "see the mini-batch logs")


def record_poisoned(store: JobStore, body: str | bytes, max_dequeue_count: int) -> str:
    """Record the mini-batch of a poisoned message (`max_dequeue_count`: the scoring
    host's deliveries of it); returns what was done, for the log. InvalidMessage for a
    message that is not a mini-batch's."""
    message = MiniBatchMessage.decode(body)
    try:
        job = store.get(message.job)
    except NotFound:
        return "skipped: job not found"
    state = store.state
    if first_completion(state, job.id, message.index) is not None:
        # A delivery recorded it, then failed before the message was completed.
        return "skipped: already recorded"
    restored = restored_completion(state, job.id, message.index, utc_now())
    if restored is not None:
        # Scored with a part blob, but the ledger line was lost: restore it.
        record_completion(state, job.id, replace(restored, host=RECORDER))
        return "scored: restored from part"
    planned = store.read_manifest(job.id, message.chunk).batch(message.index)
    rows = [(piece.first_row, piece.rows) for piece in planned.pieces]
    files = [piece.file for piece in planned.pieces] if planned.pieces else planned.files
    write_record(state, job.id, message.index,
                 attempts=message.prior_attempts + max_dequeue_count, status=POISONED,
                 error=POISONED_ERROR, traceback=None, inputs=whole(files, POISONED_ERROR, rows))
    inputs = sum(count for _, count in rows) if rows else len(planned.files)
    record_completion(state, job.id, Completion(message.index, False, 0, inputs, 0,
                                                POISONED_ERROR, utc_now(), host=RECORDER))
    return "failed: poisoned"
