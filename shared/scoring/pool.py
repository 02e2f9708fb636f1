"""A pool of worker processes for one deployment version, seen from the host.

At most `size` workers exist, one per slot, so at most `size` run() calls run at once.
Workers are started lazily with the "spawn" start method (CUDA-safe), slot i gets GPU
`gpus[i % len(gpus)]`, and a worker that times out, dies or fails init() leaves its slot
empty so that the next mini-batch starts a fresh one.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from shared.scoring.batch import FAILED, SUCCEEDED, TIMED_OUT, InputFile
from shared.scoring.worker import (
    DUMP_SIGNAL,
    Downloaded,
    Reply,
    RunRequest,
    ShutdownRequest,
    WorkerSpec,
    serve,
)

LOG_LIMIT = 1024 * 1024  # bytes of an attempt's log kept (the end of it)
DUMP_WAIT = 0.3  # seconds a timed-out worker gets to dump its stacks before it is killed
SHUTDOWN_WAIT = 10.0  # seconds a retiring worker's shutdown() may take


def download_limit(files: int) -> float:
    """Seconds a worker may take to download `files` inputs before storage counts as failing."""
    return 60.0 + files / 10


class PoolClosed(RuntimeError):
    """The pool was closed; a new one must be made for further work."""


class InputsUnavailable(RuntimeError):
    """A worker could not download the inputs (storage failing or too slow): retry later."""


@dataclass(frozen=True)
class RunResult:
    """One attempt as seen by the pool: status per batch.py, run()'s value, log text."""

    status: str
    value: Any
    returned_list: bool
    rows: int
    error: str | None
    traceback: str | None
    log: str
    downloaded_at: float | None = None  # time.monotonic() when the inputs were in place


class _Worker:
    """One live worker process and the host's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    def alive(self) -> bool:
        return self.process.is_alive()

    def exit_code(self) -> int | None:
        self.process.join(timeout=5)
        return self.process.exitcode

    def kill(self, dump_stacks: bool = False) -> None:
        """End the worker and every process it started (first dumping its stacks to its log)."""
        pid = self.process.pid
        if dump_stacks and DUMP_SIGNAL is not None and self.alive():
            try:
                os.kill(pid, DUMP_SIGNAL)
                time.sleep(DUMP_WAIT)
            except ProcessLookupError:
                pass
        try:
            family = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.Error:
                pass
        self.process.kill()
        self.process.join(timeout=5)
        # The killed descendants are not ours to reap (init adopts them), so no waiting.
        self.conn.close()


class WorkerPool:
    """Up to `size` worker processes running one scoring script; thread-safe."""

    def __init__(self, spec: WorkerSpec, size: int, *, scratch_dir: Path,
                 gpus: Sequence[str] = (), init_timeout: float = 600.0) -> None:
        self.spec = spec
        self.size = size
        self._gpus = tuple(gpus)
        self._scratch = scratch_dir
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._init_timeout = init_timeout
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * size
        self._free = list(range(size - 1, -1, -1))
        self._busy: set[int] = set()
        self._closed = False
        self._changed = threading.Condition()

    def gpu_for(self, slot: int) -> str | None:
        """The GPU a worker in `slot` sees as CUDA_VISIBLE_DEVICES (None: left as is)."""
        return self._gpus[slot % len(self._gpus)] if self._gpus else None

    def run(self, paths: Sequence[str], timeout: float, output_dir: str,
            inputs: Sequence[InputFile] = ()) -> RunResult:
        """Run the script's run() on `paths` in a free worker; waits for a free slot.

        With `inputs`, the worker first downloads `inputs[i]` to `paths[i]` (their folders
        must exist), within `download_limit`; `timeout` bounds run() alone. A missing input
        blob is a failed result; a local write error raises OSError with its errno, other
        download failures raise InputsUnavailable.
        """
        slot = self._acquire()
        try:
            return self._run_in(slot, paths, timeout, output_dir, tuple(inputs))
        finally:
            self._release(slot)

    def close(self) -> None:
        """Retire every worker: idle ones get shutdown(), busy ones are killed."""
        with self._changed:
            self._closed = True
            idle = [(i, w) for i, w in enumerate(self._workers) if w and i not in self._busy]
            busy = [w for i, w in enumerate(self._workers) if w and i in self._busy]
            self._workers = [None] * self.size
            self._changed.notify_all()
        for worker in busy:
            worker.kill()
        for _slot, worker in idle:
            self._retire(worker)

    def _acquire(self) -> int:
        with self._changed:
            while not self._free and not self._closed:
                self._changed.wait()
            if self._closed:
                raise PoolClosed("worker pool is closed")
            slot = self._free.pop()
            self._busy.add(slot)
            return slot

    def _release(self, slot: int) -> None:
        with self._changed:
            self._busy.discard(slot)
            self._free.append(slot)
            self._changed.notify()

    def _run_in(self, slot: int, paths: Sequence[str], timeout: float, output_dir: str,
                inputs: tuple[InputFile, ...]) -> RunResult:
        init_log = ""
        worker = self._workers[slot]
        if worker is None or not worker.alive():
            worker, failure, init_log = self._start(slot, output_dir)
            if failure is not None:
                return failure
        log_path = self._log_path()
        try:
            worker.conn.send(RunRequest(tuple(paths), output_dir, str(log_path), inputs))
            if inputs:
                failure = self._await_inputs(worker, len(inputs))
                if failure is not None:
                    return replace(failure, log=init_log + _read_tail(log_path))
            downloaded_at = time.monotonic()
            reply, ended = self._await(worker, timeout)
            result = self._result(reply, ended, timeout, init_log + _read_tail(log_path))
            return replace(result, downloaded_at=downloaded_at)
        finally:
            log_path.unlink(missing_ok=True)

    def _await_inputs(self, worker: _Worker, files: int) -> RunResult | None:
        """Wait for the worker's Downloaded report: None when the inputs are in place.

        A missing input blob is the failed result and so is the worker's death; a local
        write error raises OSError with its errno, other failures raise InputsUnavailable.
        """
        limit = download_limit(files)
        downloaded, ended = self._await(worker, limit, during="input download")
        if ended == TIMED_OUT:
            raise InputsUnavailable(f"input download timed out after {limit:g}s")
        if ended is not None:
            return self._result(None, ended, limit, "")
        if not isinstance(downloaded, Downloaded):
            # An unreadable report: the worker's next message cannot be trusted either.
            worker.kill()
            self._forget(worker)
            raise InputsUnavailable(f"{downloaded.error}")
        if downloaded.error is None:
            return None
        if downloaded.missing:
            return RunResult(FAILED, None, False, 0, downloaded.error, None, "")
        if downloaded.errno is not None:
            raise OSError(downloaded.errno, downloaded.error)
        raise InputsUnavailable(downloaded.error)

    def _start(self, slot: int, output_dir: str) -> tuple[_Worker, RunResult | None, str]:
        """Start a worker in `slot`; on init failure return the failed result instead."""
        parent_conn, child_conn = self._context.Pipe()
        log_path = self._log_path()
        process = self._context.Process(
            target=serve,
            args=(child_conn, self.spec, self.gpu_for(slot), output_dir, str(log_path)),
            name=f"batchfn-worker-{slot}",
        )
        process.start()
        child_conn.close()  # so the host sees EOF when the worker dies
        worker = _Worker(process, parent_conn)
        try:
            reply, ended = self._await(worker, self._init_timeout, during="init()")
            log = _read_tail(log_path)
        finally:
            log_path.unlink(missing_ok=True)
        if reply is not None and reply.ok:
            with self._changed:
                if self._closed:
                    worker.kill()
                    raise PoolClosed("worker pool is closed")
                self._workers[slot] = worker
            return worker, None, log
        if reply is not None:
            worker.kill()
        return worker, self._result(reply, ended, self._init_timeout, log, during="init()"), log

    def _await(self, worker: _Worker, timeout: float,
               during: str = "run()") -> tuple[Reply | None, str | None]:
        """Wait for the worker's reply; on timeout or death return why it ended instead."""
        try:
            if worker.conn.poll(timeout):
                return worker.conn.recv(), None
        except (EOFError, OSError):
            code = worker.exit_code()
            worker.kill()
            self._forget(worker)
            return None, f"worker process exited with code {code}"
        except Exception as exc:  # noqa: BLE001 - a result the host cannot unpickle
            return Reply(ok=False, error=f"could not read {during} result: "
                                         f"{type(exc).__name__}: {exc}"), None
        worker.kill(dump_stacks=True)
        self._forget(worker)
        return None, TIMED_OUT

    def _forget(self, worker: _Worker) -> None:
        with self._changed:
            self._workers = [None if w is worker else w for w in self._workers]

    def _result(self, reply: Reply | None, ended: str | None, timeout: float, log: str,
                during: str = "run()") -> RunResult:
        if reply is not None:
            status = SUCCEEDED if reply.ok and during == "run()" else FAILED
            return RunResult(status, reply.value, reply.returned_list, reply.rows,
                             reply.error, reply.traceback, log)
        if ended == TIMED_OUT:
            prefix = "" if during == "run()" else f"{during} "
            return RunResult(TIMED_OUT if during == "run()" else FAILED, None, False, 0,
                             f"{prefix}timed out after {timeout:g}s", _stack_dump(log), log)
        return RunResult(FAILED, None, False, 0, ended, _stack_dump(log), log)

    def _retire(self, worker: _Worker) -> None:
        log_path = self._log_path()
        try:
            worker.conn.send(ShutdownRequest(str(log_path)))
            worker.conn.poll(SHUTDOWN_WAIT)
        except (EOFError, OSError):
            pass
        finally:
            worker.kill()
            log_path.unlink(missing_ok=True)

    def _log_path(self) -> Path:
        return self._scratch / f"{uuid.uuid4().hex}.log"


def _read_tail(path: Path, limit: int = LOG_LIMIT) -> str:
    """The last `limit` bytes of a log file as text, noting what was cut."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - limit))
            data = file.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        return f"[... {size - limit} bytes of earlier output cut ...]\n{text}"
    return text


def _stack_dump(log: str) -> str | None:
    """The Python stacks faulthandler wrote into the log (a crash or a timeout), if any."""
    markers = [log.rfind(m) for m in ("Fatal Python error", "Current thread 0x", "Thread 0x")]
    found = [m for m in markers if m >= 0]
    return log[min(found):] if found else None
