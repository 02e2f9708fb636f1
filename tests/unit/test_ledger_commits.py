"""Group commit of ledger lines (shared/scoring/ledger_commits.py), over a recording append."""

from __future__ import annotations

import threading
import time

import pytest

from shared.contract.ledger import SHARD_BATCHES, Completion
from shared.scoring.ledger_commits import LedgerCommits


class Appends:
    """Records each append; each one takes `seconds`, and fails while `failing`."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[tuple[str, int, list[int]]] = []
        self.failing: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, job_id, shard, lines):
        time.sleep(self.seconds)
        if self.failing is not None:
            raise self.failing
        with self.lock:
            self.calls.append((job_id, shard, [Completion.from_line(x).index for x in lines]))


def _completion(index: int) -> Completion:
    return Completion(index, True, 1, 0, 1)


def _record_all(commits: LedgerCommits, items: list[tuple[str, int]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def one(job: str, index: int) -> None:
        try:
            commits.record(job, _completion(index))
        except Exception as exc:  # noqa: BLE001 - collected for the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=item) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_a_line_alone_is_appended_at_once():
    appends = Appends()
    commits = LedgerCommits(appends, max_wait=5.0)
    started = time.monotonic()
    commits.record("job", _completion(3))
    assert time.monotonic() - started < 1.0  # nobody announced: no waiting
    assert appends.calls == [("job", 0, [3])]


def test_lines_that_arrive_during_an_append_share_the_next_one():
    appends = Appends(seconds=0.1)
    commits = LedgerCommits(appends)
    assert _record_all(commits, [("job", i) for i in range(10)]) == []
    recorded = sorted(i for _, _, lines in appends.calls for i in lines)
    assert recorded == list(range(10))
    assert len(appends.calls) < 10
    assert commits.stats.lines == 10 and commits.stats.appends == len(appends.calls)


def test_each_shard_and_job_gets_its_own_appends():
    appends = Appends(seconds=0.05)
    commits = LedgerCommits(appends)
    items = [("a", 0), ("a", SHARD_BATCHES), ("b", 1), ("a", 1), ("b", 2)]
    assert _record_all(commits, items) == []
    for job, shard, lines in appends.calls:
        assert {(job, i // SHARD_BATCHES) for i in lines} == {(job, shard)}


def test_an_announced_line_is_waited_for_within_the_bound():
    appends = Appends()
    commits = LedgerCommits(appends, max_wait=2.0)

    def later() -> None:
        with commits.recording("job", 2):
            time.sleep(0.2)
            commits.record("job", _completion(2))

    with commits.recording("job", 1):
        other = threading.Thread(target=later)
        with commits.recording("job", 0):  # the other thread's announcement comes first
            other.start()
            time.sleep(0.05)
            commits.record("job", _completion(0))
    other.join()
    assert appends.calls == [("job", 0, [0, 2])]  # 1 was announced but never recorded


def test_the_wait_for_announced_lines_is_bounded():
    appends = Appends()
    commits = LedgerCommits(appends, max_wait=0.1)
    with commits.recording("job", 1), commits.recording("job", 0):
        started = time.monotonic()
        commits.record("job", _completion(0))
        assert 0.05 < time.monotonic() - started < 1.0
    assert appends.calls == [("job", 0, [0])]


def test_a_group_is_cut_at_max_lines():
    appends = Appends(seconds=0.1)
    commits = LedgerCommits(appends, max_lines=3)
    assert _record_all(commits, [("job", i) for i in range(9)]) == []
    assert max(len(lines) for _, _, lines in appends.calls) <= 3


def test_a_failed_append_fails_every_line_in_it_and_later_ones_go_through():
    appends = Appends(seconds=0.05)
    appends.failing = OSError("storage down")
    commits = LedgerCommits(appends)
    errors = _record_all(commits, [("job", i) for i in range(4)])
    assert len(errors) == 4 and all(isinstance(e, OSError) for e in errors)
    appends.failing = None
    commits.record("job", _completion(7))
    assert appends.calls == [("job", 0, [7])]


def test_the_bytes_of_a_group_stay_within_one_block():
    appends = Appends(seconds=0.05)
    line = len(_completion(0).to_line())
    commits = LedgerCommits(appends, max_bytes=2 * line)
    assert _record_all(commits, [("job", i) for i in range(6)]) == []
    assert max(len(lines) for _, _, lines in appends.calls) <= 2


@pytest.mark.parametrize("count", [1, 5])
def test_nothing_is_left_behind_once_every_line_is_recorded(count):
    commits = LedgerCommits(Appends())
    _record_all(commits, [("job", i) for i in range(count)])
    assert commits._shards == {}
