"""A scoring host's heartbeat for one job: what it holds of the job and how far each is.

A host that holds mini-batches of a job writes one `Heartbeat` blob for that job every
`interval` seconds (layout.heartbeat: `<job>/heartbeats/<host>.json`), listing every
mini-batch of the job it holds: waiting for a worker slot, running (with the inputs read),
or recording its result. The job's monitor reads them: a blob whose last write is older
than the stall threshold belongs to a host that stopped (killed, evicted, hung), and its
mini-batches are sent again. A beat also lists the mini-batches the host `deferred` since
its previous beat (sent back to the queue unscored: their compute had no free host slot),
so the monitor knows they were not lost. The monitor writes `stop` into a host's blob to
ask it to stop its copies of mini-batches that another copy finished; the host sees its
conditional write refused (the blob changed), reads the blob and stops them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

WAITING = "waiting"  # received, waiting for a worker slot
RUNNING = "running"  # its worker downloads inputs or runs run()
RECORDING = "recording"  # run() returned: its result is on the way to the ledger
PHASES = (WAITING, RUNNING, RECORDING)
DEFAULT_INTERVAL_SECONDS = 3.0  # between a host's heartbeats unless its app setting says
MAX_HELD = 1000  # entries one heartbeat may list, per list (a host holds a few dozen at most)
MAX_HOST_NAME = 120


def bounded_setting(setting: str, text: str | None, default: float, low: float,
                    high: float) -> float:
    """The number an app setting of the recovery (heartbeat interval, stall threshold,
    backup factor) holds: `default` when unset; ValueError naming the setting for one that
    is not a number from `low` to `high`."""
    text = (text or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # refused below, with the setting's name
    if not low <= value <= high:
        raise ValueError(f"{setting} must be between {low:g} and {high:g}, not {text!r}")
    return value


class InvalidHeartbeat(ValueError):
    """A heartbeat blob that is not one (the monitor ignores it)."""


@dataclass(frozen=True)
class HeldBatch:
    """One mini-batch a host holds: which `copy` of it (0: the planner's message, n: the
    monitor's n-th), the `attempt`, its `phase`, `seconds` in scoring so far (0 while
    waiting), the `inputs` its worker read and the `rows` run() returned."""

    index: int
    copy: int
    attempt: int
    phase: str
    seconds: float = 0.0
    inputs: int = 0
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"i": self.index, "c": self.copy, "a": self.attempt, "p": self.phase,
                "s": round(self.seconds, 3), "n": self.inputs, "r": self.rows}

    @classmethod
    def from_dict(cls, body: Any) -> HeldBatch:
        try:
            held = cls(index=body["i"], copy=body["c"], attempt=body["a"], phase=body["p"],
                       seconds=float(body["s"]), inputs=body["n"], rows=body["r"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidHeartbeat(f"not a held mini-batch: {str(body)[:200]}") from exc
        counts = (held.index, held.copy, held.attempt, held.inputs, held.rows)
        if (held.phase not in PHASES or held.seconds < 0
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                           for n in counts)):
            raise InvalidHeartbeat(f"not a held mini-batch: {str(body)[:200]}")
        return held


@dataclass(frozen=True)
class Heartbeat:
    """A host's report on one job: `held` mini-batches, its worker `slots` for the job's
    deployment, its `interval` between reports, the indices the monitor asked it to
    `stop` (written by the monitor, cleared by the host's next write), and the indices it
    `deferred` since its previous beat (absent from older hosts' beats)."""

    host: str
    interval: float
    slots: int
    held: tuple[HeldBatch, ...] = ()
    stop: tuple[int, ...] = ()
    deferred: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {"host": self.host, "interval": self.interval,
                                "slots": self.slots,
                                "held": [held.to_dict() for held in self.held]}
        if self.stop:
            body["stop"] = list(self.stop)
        if self.deferred:
            body["deferred"] = list(self.deferred)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Heartbeat:
        try:
            body = json.loads(data)
            beat = cls(host=body["host"], interval=float(body["interval"]),
                       slots=body["slots"],
                       held=tuple(HeldBatch.from_dict(h) for h in body["held"][:MAX_HELD]),
                       stop=tuple(body.get("stop") or ())[:MAX_HELD],
                       deferred=tuple(body.get("deferred") or ())[:MAX_HELD])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidHeartbeat(f"not a heartbeat: {data[:200]!r}") from exc
        valid = (isinstance(beat.host, str) and 0 < len(beat.host) <= MAX_HOST_NAME
                 and beat.interval > 0 and isinstance(beat.slots, int) and beat.slots >= 0
                 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                         for i in (*beat.stop, *beat.deferred)))
        if not valid:
            raise InvalidHeartbeat(f"not a heartbeat: {data[:200]!r}")
        return beat
