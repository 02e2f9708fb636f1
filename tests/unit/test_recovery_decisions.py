"""The monitor's recovery decisions (shared/control/recovery.py), the heartbeat format
(shared/contract/heartbeats.py) and what a scoring host's beats report
(shared/scoring/heartbeats.py), with no storage: heartbeats as they would be read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.contract.heartbeats import (
    RECORDING,
    RUNNING,
    WAITING,
    Heartbeat,
    HeldBatch,
    InvalidHeartbeat,
)
from shared.contract.ledger import Completion
from shared.control.progress import BACKUP, REDELIVERY, Progress
from shared.control.recovery import Copy, RecoverySettings, decide
from shared.scoring import heartbeats
from shared.scoring.heartbeats import Holdings
from shared.storage.heartbeat_blobs import StoredHeartbeat

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = RecoverySettings(stall_seconds=20.0, backups=True, backup_factor=2.0)


def _progress(batches: int, done: list[int], ms: int = 100) -> Progress:
    progress = Progress.start(batches * 10, batches)
    for index in done:
        progress.apply(Completion(index, True, 10, 0, 10, scoring_ms=ms))
    return progress


def _beat(host: str, held: list[HeldBatch], age: float, slots: int = 2,
          interval: float = 3.0, stop: tuple[int, ...] = (),
          deferred: tuple[int, ...] = ()) -> StoredHeartbeat:
    beat = Heartbeat(host, interval, slots, tuple(held), stop, deferred)
    return StoredHeartbeat(Heartbeat.from_bytes(beat.to_bytes()), NOW - timedelta(seconds=age),
                           f"etag-{host}")


def _held(index: int, phase: str = RUNNING, seconds: float = 0.5, attempt: int = 1,
          copy: int = 0) -> HeldBatch:
    return HeldBatch(index, copy, attempt, phase, seconds)


def test_a_host_silent_past_the_threshold_has_its_mini_batches_sent_again():
    progress = _progress(10, [0, 1, 2])
    beats = [_beat("dead", [_held(3, attempt=2), _held(4, WAITING, 0.0), _held(2)], age=25),
             _beat("alive", [_held(5), _held(6)], age=1)]
    decision = decide(progress, beats, SETTINGS, NOW)
    # The stalled attempt counts: the copies carry it as a prior attempt. 2 is done already.
    assert set(decision.copies) == {Copy(3, REDELIVERY, 2), Copy(4, REDELIVERY, 1)}


def test_a_slow_but_beating_host_keeps_its_mini_batches():
    progress = _progress(10, [0, 1, 2, 3, 4, 5, 6, 7])
    beats = [_beat("slow", [_held(8, seconds=0.15), _held(9, seconds=0.1)], age=2)]
    assert decide(progress, beats, SETTINGS, NOW).copies == ()


def test_a_mini_batch_nobody_reports_behind_the_queue_front_is_sent_after_the_threshold():
    progress = _progress(10, [0, 1, 2])
    beats = [_beat("alive", [_held(5), _held(6)], age=1)]  # 3 and 4: taken by a dead host
    assert decide(progress, beats, SETTINGS, NOW).copies == ()
    assert set(progress.unclaimed) == {"3", "4"}
    beats = [_beat("alive", [_held(5), _held(6)], age=-20)]  # still beating 21 s on
    later = decide(progress, beats, SETTINGS, NOW + timedelta(seconds=21))
    assert set(later.copies) == {Copy(3, REDELIVERY, 1), Copy(4, REDELIVERY, 1)}
    # Mini-batches past the front (7, 8, 9) may still wait in the queue: never copied.


def test_the_last_mini_batches_nobody_reports_are_sent_once_the_queue_shows_none():
    # 9 was taken by a host that died before its first heartbeat: no later mini-batch shows
    # that the queue went past it, so only an empty queue says it is not waiting there.
    progress = _progress(10, [0, 1, 2, 3, 4, 5, 6, 7, 8])
    peeks = []

    def idle(answer: bool):
        return lambda: peeks.append(answer) or answer

    assert decide(progress, [], SETTINGS, NOW, idle(False)).copies == ()
    assert progress.unclaimed == {}  # its message may still wait: not watched
    assert decide(progress, [], SETTINGS, NOW, idle(True)).copies == ()
    assert set(progress.unclaimed) == {"9"}
    later = decide(progress, [], SETTINGS, NOW + timedelta(seconds=21), idle(True))
    assert later.copies == (Copy(9, REDELIVERY, 1),)
    assert peeks == [False, True, True]  # one peek per check
    # Without the queue's answer (or with many mini-batches left) nothing is assumed.
    fresh = _progress(10, [0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert decide(fresh, [], SETTINGS, NOW + timedelta(seconds=60)).copies == ()
    many = _progress(100, [0])
    assert decide(many, [], SETTINGS, NOW, idle(True)).copies == () and len(peeks) == 3


def test_a_watched_mini_batch_that_shows_up_is_forgotten():
    progress = _progress(10, [0, 1, 2])
    decide(progress, [_beat("alive", [_held(5)], age=1)], SETTINGS, NOW)
    assert "3" in progress.unclaimed
    decide(progress, [_beat("alive", [_held(3), _held(4), _held(5)], age=1)], SETTINGS, NOW)
    assert progress.unclaimed == {}


def test_a_mini_batch_reported_as_deferred_is_not_copied_until_it_vanishes():
    progress = _progress(10, [0, 1, 2])
    # 3 and 4 are nowhere; 3 was turned away by a full compute a second ago (back in the
    # queue), and is again 19 s later; 4 nobody reports.
    beats = [_beat("alive", [_held(5), _held(6)], age=1),
             _beat("turned-away", [], age=1, deferred=(3,))]
    assert decide(progress, beats, SETTINGS, NOW).copies == ()
    beats = [_beat("alive", [_held(5), _held(6)], age=-20),
             _beat("turned-away", [], age=-19, deferred=(3,))]
    later = decide(progress, beats, SETTINGS, NOW + timedelta(seconds=21))
    assert set(later.copies) == {Copy(4, REDELIVERY, 1)}  # the unreported one only
    # 3 is deferred no more and nobody reports it: a threshold after its last deferral.
    beats[0] = _beat("alive", [_held(5), _held(6)], age=-40)
    assert decide(progress, beats, SETTINGS, NOW + timedelta(seconds=38)).copies == (
        Copy(4, REDELIVERY, 1),)
    last = decide(progress, beats, SETTINGS, NOW + timedelta(seconds=40))
    assert set(last.copies) == {Copy(3, REDELIVERY, 1), Copy(4, REDELIVERY, 1)}


def test_the_tail_gets_backups_of_slow_mini_batches_up_to_the_idle_slots():
    progress = _progress(10, list(range(7)), ms=200)
    beats = [_beat("slow", [_held(7, seconds=5.0), _held(8, seconds=0.3),
                            _held(9, WAITING, 0.0)], age=1, slots=2),
             _beat("fast", [], age=1, slots=2)]
    decision = decide(progress, beats, SETTINGS, NOW)
    # Past max(1 s, 2 x 0.2 s): 7 runs slow; 9 waits behind it on the same host; 8 not yet.
    assert [(c.index, c.kind) for c in decision.copies] == [(7, BACKUP), (9, BACKUP)]
    assert decision.copies[0].prior_attempts == 0  # the same attempt: not a retry


def test_no_backups_while_mini_batches_of_the_job_still_wait_in_the_queue():
    progress = _progress(10, list(range(6)), ms=200)
    beats = [_beat("slow", [_held(7, seconds=5.0), _held(8, seconds=5.0)], age=1),
             _beat("fast", [], age=1)]  # 6 and 9 are nowhere: in the queue
    assert decide(progress, beats, SETTINGS, NOW).copies == ()


def test_no_backups_when_turned_off_or_without_idle_slots():
    progress = _progress(10, list(range(8)), ms=200)
    beats = [_beat("slow", [_held(8, seconds=5.0), _held(9, seconds=5.0)], age=1, slots=2)]
    assert decide(progress, beats, SETTINGS, NOW).copies == ()  # no idle slot anywhere
    beats.append(_beat("fast", [], age=1))
    off = RecoverySettings(backups=False)
    assert decide(progress, beats, off, NOW).copies == ()
    assert len(decide(progress, beats, SETTINGS, NOW).copies) == 2


def test_copies_of_a_mini_batch_are_capped_and_spaced():
    progress = _progress(10, [0, 1, 2])
    for _ in range(3):
        progress.note_copy(3, REDELIVERY)
    beats = [_beat("dead", [_held(3), _held(4)], age=60)]
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert [c.index for c in decide(progress, beats, SETTINGS, later).copies] == [4]
    # A copy sent a moment ago may still wait in the queue: no second copy yet.
    progress.note_copy(4, REDELIVERY)
    assert decide(progress, beats, SETTINGS, datetime.now(UTC)).copies == ()
    assert [c.index for c in decide(progress, beats, SETTINGS, later).copies] == [4]


def test_a_finished_mini_batch_still_held_as_a_copy_is_stopped_at_its_host():
    progress = _progress(10, [0, 1, 2, 7])
    progress.note_copy(7, BACKUP)
    beats = [_beat("slow", [_held(7, seconds=9.0), _held(8)], age=1),
             _beat("acked", [_held(7, RECORDING)], age=1, stop=(7,)),
             _beat("plain", [_held(1)], age=1)]  # 1 was done with no copy: left alone
    stops = decide(progress, beats, SETTINGS, NOW).stops
    assert [(stored.beat.host, indices) for stored, indices in stops] == [("slow", (7,))]


def test_a_backup_that_counts_first_is_counted_as_won():
    progress = _progress(4, [0])
    progress.note_copy(1, BACKUP)
    progress.note_copy(2, REDELIVERY)
    progress.apply(Completion(1, True, 10, 0, 10, copy=1))
    progress.apply(Completion(2, True, 10, 0, 10, copy=1))
    progress.apply(Completion(1, True, 10, 0, 10, copy=0))  # the slow original, dropped
    assert progress.recovery == {"redelivered": 1, "backups": 1, "backups_won": 1}
    assert Progress.from_dict(progress.to_dict()).recovery == progress.recovery
    assert progress.view()["recovery"] == progress.recovery


def test_settings_come_from_the_app_settings(monkeypatch):
    monkeypatch.setenv("BATCHFN_STALL_SECONDS", "7.5")
    monkeypatch.setenv("BATCHFN_BACKUPS", "off")
    monkeypatch.setenv("BATCHFN_BACKUP_FACTOR", "3")
    assert RecoverySettings.from_environment() == RecoverySettings(7.5, False, 3.0)
    monkeypatch.setenv("BATCHFN_BACKUPS", "maybe")
    with pytest.raises(ValueError, match="BATCHFN_BACKUPS"):
        RecoverySettings.from_environment()
    monkeypatch.setenv("BATCHFN_BACKUPS", "on")
    monkeypatch.setenv("BATCHFN_STALL_SECONDS", "0")
    with pytest.raises(ValueError, match="BATCHFN_STALL_SECONDS"):
        RecoverySettings.from_environment()


@pytest.mark.parametrize("data", [
    b"", b"[]", b'{"host": "h"}',
    b'{"host": "", "interval": 3, "slots": 2, "held": []}',
    b'{"host": "h", "interval": 0, "slots": 2, "held": []}',
    b'{"host": "h", "interval": 3, "slots": 2, "held": [{"i": -1, "c": 0, "a": 1, "p": "running", "s": 0, "n": 0, "r": 0}]}',  # noqa: E501
    b'{"host": "h", "interval": 3, "slots": 2, "held": [{"i": 1, "c": 0, "a": 1, "p": "lost", "s": 0, "n": 0, "r": 0}]}',  # noqa: E501
    b'{"host": "h", "interval": 3, "slots": 2, "held": [], "stop": ["x"]}',
    b'{"host": "h", "interval": 3, "slots": 2, "held": [], "deferred": [-1]}',
    b'{"host": "h", "interval": 3, "slots": 2, "held": [], "deferred": [true]}',
    b'{"host": "h", "interval": 3, "slots": 2, "held": [], "deferred": 7}',
])
def test_what_is_not_a_heartbeat_is_refused(data):
    with pytest.raises(InvalidHeartbeat):
        Heartbeat.from_bytes(data)


def test_a_heartbeat_reads_back_as_written():
    beat = Heartbeat("host-1", 3.0, 2, (HeldBatch(4, 1, 2, RUNNING, 1.25, 10, 0),), (3,))
    assert Heartbeat.from_bytes(beat.to_bytes()) == beat
    turned_away = Heartbeat("host-2", 3.0, 0, deferred=(5, 8))
    assert Heartbeat.from_bytes(turned_away.to_bytes()) == turned_away
    # A beat of a host from before deferrals were reported: none.
    old = b'{"host": "h", "interval": 3, "slots": 2, "held": []}'
    assert Heartbeat.from_bytes(old).deferred == ()
    assert b"deferred" not in Heartbeat("h", 3.0, 2).to_bytes()


def test_a_host_reports_a_deferral_in_its_next_beat_only(monkeypatch):
    written: list[tuple[str, Heartbeat]] = []
    monkeypatch.setattr(heartbeats, "write_heartbeat",
                        lambda state, job_id, beat, etag: written.append((job_id, beat)) or "e")
    holdings = Holdings(None, "host-c", interval=60)  # beats only when asked here
    try:
        holdings.release(holdings.hold("job-a", 3, 0, 1, slots=0), deferred=True)
        kept = holdings.hold("job-a", 5, 0, 1, slots=2)
        holdings.release(holdings.hold("job-b", 7, 0, 1, slots=0), deferred=True)
        # job-b's only holding was deferred: its beat still goes out, and says so.
        assert holdings.beat() == 2
        beats = dict(written)
        assert beats["job-a"].deferred == (3,) and [h.index for h in beats["job-a"].held] == [5]
        assert beats["job-b"].deferred == (7,) and beats["job-b"].held == ()
        written.clear()
        assert holdings.beat() == 1  # job-b: nothing more
        assert written[0][0] == "job-a" and written[0][1].deferred == ()
        holdings.release(kept)  # scored, not deferred
        written.clear()
        assert holdings.beat() == 1 and written[0][1] == Heartbeat("host-c", 60, 2)
    finally:
        holdings.close()
