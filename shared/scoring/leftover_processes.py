"""Ending every process a scoring worker leaves behind, double-forked ones included.

A worker leads a process group of its own, and the pool kills that group and the worker's
descendants when the worker's slot ends. A process that left both (`setsid()` and a double
fork, as daemons do) is found by its user: where workers run as their deployment's own
user, every process of that user belongs to that deployment's workers. The host makes
itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a process that escapes its
worker's tree becomes the host's child instead of init's: `end_leftovers(uid)` then kills
every process of `uid` that is not (below) one of this host's live workers, whose tree
ends at this host or at init (one left by a host that died); the trees of another host
process's workers of the same deployment, on the same machine, are left to it. Killed
orphans the host adopted are reaped here (the processes it started itself are waited for
by their Popen objects, never here).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import psutil

log = logging.getLogger("batchfn.scoring")

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
SWEEP_ROUNDS = 50  # a process that forks while it is being killed is caught next round
SWEEP_PAUSE = 0.01

# Held while a process of a worker user is started (between fork and registration it is
# nobody's) and while leftovers are listed and killed.
_lock = threading.RLock()
_live: set[int] = set()  # started here, running for a live slot (workers, trial starts)
_started: set[int] = set()  # started here and not yet waited for by their Popen
_subreaper = False


def prctl(option: int, value: int) -> str | None:
    """Set a prctl(2) option of this process (Linux): None, or why it could not be set."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def become_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux); True once it is."""
    global _subreaper
    with _lock:
        if _subreaper or not sys.platform.startswith("linux"):
            return _subreaper
        problem = prctl(PR_SET_CHILD_SUBREAPER, 1)
        if problem:
            log.warning("could not make the scoring host a child subreaper: %s", problem)
            return False
        _subreaper = True
        return True


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Hold off sweeps while a process of a worker user starts (see `live`)."""
    with _lock:
        yield


def live(pid: int) -> None:
    """Count `pid` (started here, inside `starting()`) as a live slot's process."""
    with _lock:
        _live.add(pid)
        _started.add(pid)


def ended(pid: int) -> None:
    """`pid`'s slot ended: it and what it left are leftovers from now on."""
    with _lock:
        _live.discard(pid)


def waited(pid: int) -> None:
    """`pid`'s Popen has waited for it: its number may be another process's from now on."""
    with _lock:
        _live.discard(pid)
        _started.discard(pid)


def end_leftovers(uid: int) -> int:
    """Kill every process of `uid` left behind by this host's workers (see the module's
    docstring); returns how many were killed. Never for the host's own user."""
    if uid == os.geteuid() or uid == 0:
        raise ValueError("leftovers are ended by user only for a worker user of their own")
    me = os.getpid()
    killed: set[int] = set()
    for _ in range(SWEEP_ROUNDS):
        with _lock:
            table = _process_table()
            targets = [pid for pid, (_, owner, _) in table.items()
                       if owner == uid and _left_behind(pid, uid, table, _live, me)]
            running = [pid for pid in targets if table[pid][2] != psutil.STATUS_ZOMBIE]
            for pid in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed.update(running)
            _reap(pid for pid in targets if table[pid][0] == me and pid not in _started)
        if not running:
            break
        time.sleep(SWEEP_PAUSE)
    if killed:
        log.info("ended %d process(es) of uid %d left behind by scoring workers",
                 len(killed), uid)
    return len(killed)


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, real uid, status) of every process that can be seen."""
    table = {}
    for process in psutil.process_iter(["ppid", "uids", "status"]):
        info = process.info
        if info["uids"] is not None and info["ppid"] is not None:
            table[process.pid] = (info["ppid"], info["uids"].real, info["status"])
    return table


def _left_behind(pid: int, uid: int, table: dict[int, tuple[int, int, str]],
                 live: set[int], me: int) -> bool:
    """Whether `pid` (of `uid`) is in no live slot's tree: walking up through processes of
    `uid`, no live process of this host is met, and the top's parent is this host, init,
    or gone."""
    seen = set()
    top = pid
    while True:
        if top in live:
            return False
        seen.add(top)
        parent = table[top][0]
        if parent in table and table[parent][1] == uid and parent not in seen:
            top = parent
            continue
        return parent in (me, 1, 0) or parent not in table


def _reap(pids: Iterator[int]) -> None:
    """Collect the exit status of orphans this host adopted (no zombie is left)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
