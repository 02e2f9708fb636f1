"""A pool of worker processes for one deployment version, seen from the host.

At most `size` workers exist, one per slot, so at most `size` run() calls run at once.
Each slot takes one mini-batch ahead of the one running (`prefetch`): it is sent to the
worker at once, so its inputs download while the other's run() works, and its run()
starts the moment the other's ends. Workers are started lazily as fresh interpreters
(CUDA-safe) by isolation.start_worker, which hands them nothing of the host's but an
allow-listed environment and their pipe, under another OS account where the host runs as
root. Slot i gets GPU `gpus[i % len(gpus)]`, and a worker that times out, dies or fails
init() leaves its slot empty so that the next mini-batch starts a fresh one; a mini-batch
that was waiting in a worker that died before its run() started is sent to the fresh
worker (it was not attempted).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

from shared.contract.errors import StorageUnavailable
from shared.scoring.batch import FAILED, STOPPED, SUCCEEDED, TIMED_OUT
from shared.scoring.isolation import (
    UnsafeWorkerFile,
    WorkerAccount,
    WorkerProcess,
    open_worker_file,
    prepare_worker_folder,
    receive,
    start_worker,
    worker_environment,
)
from shared.worker.encoding import EncodedPart
from shared.worker.protocol import (
    CPU_THREAD_VARIABLES,
    DUMP_SIGNAL,
    MAX_PIPE_MESSAGE_BYTES,
    InputDownload,
    Reply,
    RunRequest,
    ShutdownRequest,
    Started,
    TablePiece,
    WorkerSpec,
    bounded,
)
from shared.worker.tabular.failures import FailedInput

LOG_LIMIT = 1024 * 1024  # bytes of an attempt's log kept (the end of it)
DUMP_WAIT = 0.3  # seconds a timed-out worker gets to dump its stacks before it is killed
SHUTDOWN_WAIT = 10.0  # seconds a retiring worker's shutdown() may take
SLOT_DEPTH = 2  # mini-batches per slot: the one running and the one whose inputs download
WORKER_LOSSES = 3  # workers a mini-batch may lose before its run() started, then it gives up
READ_POLL = 0.5  # seconds between checks of a worker's pipe reader for its end
TEMP_VARIABLES = ("TMPDIR", "TMP", "TEMP")  # where tempfile and most tools make temp files
STOP_POLL = 0.25  # seconds between looks at a mini-batch's stop event while it waits or runs


def download_limit(files: int) -> float:
    """Seconds a worker may take to download `files` inputs before storage counts as failing."""
    return 60.0 + files / 10


def worker_cpu_threads(concurrency: int, cpus: int | None = None) -> int:
    """Math-library threads for each of `concurrency` workers on a host with `cpus` cores.

    One core is left to the host process, which downloads the next mini-batches while
    run() works; the rest is shared by the workers. Left to themselves, torch and numpy
    start one thread per core in every worker: oversubscribed, their barrier waits make a
    forward pass many times slower (measured on 2 loaded cores: 71 ms with 2 threads,
    4 ms with 1, for a 10-image MNIST batch).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    return max(1, (cpus - 1) // max(1, concurrency))


class PoolClosed(RuntimeError):
    """The pool was closed; a new one must be made for further work."""


class _Stopped(Exception):
    """The mini-batch's stop event was set: another copy of it finished first."""


@dataclass(frozen=True)
class RunResult:
    """One attempt as seen by the pool: status per batch.py, run()'s rows and part, log text,
    and the inputs that failed on their own (see worker.Reply)."""

    status: str
    rows: int
    part: EncodedPart | None
    missing: tuple[int, ...]
    error: str | None
    traceback: str | None
    log: str
    downloaded_at: float | None = None  # time.monotonic() when the inputs were in place
    failed: tuple[FailedInput, ...] = ()
    failed_inputs: int = 0
    given: int = 0  # rows run() got (a tabular mini-batch)
    startup_failed: bool = False  # the worker could not load the script or run init()
    input_bytes: int = 0  # what the worker read for the attempt
    gpu: str | None = None  # the GPU id the worker had (CUDA_VISIBLE_DEVICES)
    run_seconds: float | None = None  # run() and its encoding, timed by the worker


@dataclass(frozen=True)
class _Ended:
    """The worker process is gone (died, was killed, or its pipe broke)."""

    why: str


class _Worker:
    """One live worker process and the host's end of its pipe.

    A reader thread hands each message the worker sends to the mailbox of the request it
    answers; requests run in the worker in the order they were sent.
    """

    def __init__(self, process: WorkerProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._mailboxes: dict[int, queue.SimpleQueue] = {}
        self._order: list[int] = []  # requests sent and not yet answered, oldest first
        self._head_since = time.monotonic()  # when the oldest request became the oldest
        self._ended: _Ended | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read, name="batchfn-worker-pipe",
                                        daemon=True)
        self._reader.start()

    def alive(self) -> bool:
        return self._ended is None and self.process.is_alive()

    def pending(self) -> int:
        with self._lock:
            return len(self._order)

    def send(self, request: RunRequest | ShutdownRequest) -> queue.SimpleQueue:
        """Send `request`; its answers arrive in the returned mailbox."""
        box: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            if self._ended is not None:
                box.put(self._ended)
                return box
            if not self._order:
                self._head_since = time.monotonic()
            self._mailboxes[request.id] = box
            self._order.append(request.id)
        try:
            with self._send_lock:
                self.conn.send(request)
        except (OSError, ValueError) as exc:
            self._end(f"worker pipe broke: {exc}")
        return box

    def head_since(self, request_id: int) -> float | None:
        """When `request_id` became the oldest unanswered request (None: it is not yet)."""
        with self._lock:
            if self._order and self._order[0] == request_id:
                return self._head_since
            return None

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._mailboxes.pop(request_id, None)

    def kill(self, dump_stacks: bool = False) -> None:
        """End the worker and every process it started (first dumping its stacks to its log)."""
        pid = self.process.pid
        if dump_stacks and DUMP_SIGNAL is not None and self.process.is_alive():
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
        self._end(f"worker process exited with code {self.process.exitcode}")

    def _read(self) -> None:
        while not self._closing:
            try:
                if not self.conn.poll(READ_POLL):
                    continue
                message = _receive(self.conn)
            except (EOFError, OSError):
                self.process.join(timeout=5)
                self._end(f"worker process exited with code {self.process.exitcode}")
                self.process.kill()  # its slot ended: so does what it left behind
                break
            except Exception as exc:  # noqa: BLE001 - unreadable: nothing after it is trusted
                self._end(f"could not read the worker's answer: {type(exc).__name__}: {exc}")
                self.kill()
                break
            self._deliver(message)
        self.conn.close()

    def _deliver(self, message: Started | Reply) -> None:
        with self._lock:
            box = self._mailboxes.get(message.request)
            if isinstance(message, Reply) and message.request in self._order:
                self._order.remove(message.request)
                self._mailboxes.pop(message.request, None)
                self._head_since = time.monotonic()
            elif isinstance(message, Started) and message.error is not None:
                # The worker skips run() after a failed download: this is the last word.
                if message.request in self._order:
                    self._order.remove(message.request)
                self._head_since = time.monotonic()
        if box is not None:
            box.put(message)

    def _end(self, why: str) -> None:
        with self._lock:
            if self._ended is None:
                self._ended = _Ended(why)
            ended = self._ended
            boxes = list(self._mailboxes.values())
            self._mailboxes.clear()
            self._order.clear()
            self._closing = True
        for box in boxes:
            box.put(ended)


class _Slot:
    """One worker's place in the pool and the mini-batches sent or about to be sent to it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker: _Worker | None = None
        self.taken = 0  # mini-batches holding this slot (at most the pool's depth)
        self.starting = threading.Lock()  # held while a worker starts (init()) or is sent to


class WorkerPool:
    """Up to `size` worker processes running one scoring script; thread-safe."""

    def __init__(self, spec: WorkerSpec, size: int, *, scratch_dir: Path,
                 gpus: Sequence[str] = (), init_timeout: float = 600.0,
                 prefetch: bool = True, account: WorkerAccount | None = None,
                 home: Path | None = None, temp: Path | None = None) -> None:
        """`account`: the OS account workers run as (None: the host's own), with `home`
        as their HOME and `temp` as their TMPDIR; `scratch_dir` holds the attempt logs
        workers write."""
        self.spec = spec
        self.size = size
        self.depth = SLOT_DEPTH if prefetch else 1
        self._gpus = tuple(gpus)
        self._scratch = prepare_worker_folder(scratch_dir, account)
        self._init_timeout = init_timeout
        self._account = account
        self._home = home
        self._temp = temp
        self._slots = [_Slot(i) for i in range(size)]
        self._ids = itertools.count(1)
        self._closed = False
        self._changed = threading.Condition()

    def gpu_for(self, slot: int) -> str | None:
        """The GPU a worker in `slot` sees as CUDA_VISIBLE_DEVICES (None: left as is)."""
        return self._gpus[slot % len(self._gpus)] if self._gpus else None

    def run(self, paths: Sequence[str], timeout: float, output_dir: str, *,
            downloads: Callable[[], Sequence[InputDownload]] | None = None,
            output_format: str | None = None, names: Sequence[str] = (),
            scratch: str | None = None, input_format: str = "files",
            table_pieces: Callable[[], Sequence[TablePiece]] | None = None,
            passthrough_columns: Sequence[str] = (), stop: threading.Event | None = None,
            on_start: Callable[[], None] | None = None) -> RunResult:
        """Run the script's run() on `paths` in a worker; waits while every slot is full.

        With `downloads` (called for fresh grants each time the request is sent), the
        worker first downloads `downloads()[i]` to `paths[i]` — while the slot's previous
        mini-batch still runs — within `download_limit` from when it is next in line;
        `timeout` bounds run() alone. run()'s rows come back encoded for `output_format`
        (None: counted only), `names` naming the inputs for a short return; `scratch` is
        removed by the worker after run(). A missing input blob is a failed result; a
        local write error raises OSError with its errno, other download failures raise
        StorageUnavailable. With `table_pieces` (fresh grants too) run() gets the rows of
        those ranges of `input_format` files instead of paths, `passthrough_columns`
        copied to its output. `stop` set while it waits or runs ends it (its worker is killed)
        with status STOPPED; `on_start` is called when a slot takes it.
        """
        stop = stop or threading.Event()
        try:
            slot = self._acquire(stop)
        except _Stopped:
            return _stopped()
        try:
            if on_start is not None:
                on_start()
            return self._run_in(slot, paths, timeout, output_dir, downloads,
                                output_format, tuple(names), scratch, input_format,
                                table_pieces, tuple(passthrough_columns), stop)
        finally:
            self._release(slot)

    def close(self) -> None:
        """Retire every worker: idle ones get shutdown(), busy ones are killed."""
        with self._changed:
            self._closed = True
            workers = [slot.worker for slot in self._slots if slot.worker is not None]
            for slot in self._slots:
                slot.worker = None
            self._changed.notify_all()
        for worker in workers:
            if worker.pending():
                worker.kill()
            else:
                self._retire(worker)

    def _acquire(self, stop: threading.Event) -> _Slot:
        with self._changed:
            while not self._closed:
                if stop.is_set():
                    raise _Stopped()
                free = [slot for slot in self._slots if slot.taken < self.depth]
                if free:
                    slot = min(free, key=lambda s: s.taken)
                    slot.taken += 1
                    return slot
                self._changed.wait(STOP_POLL)
            raise PoolClosed("worker pool is closed")

    def _release(self, slot: _Slot) -> None:
        with self._changed:
            slot.taken -= 1
            self._changed.notify()

    def _run_in(self, slot: _Slot, paths: Sequence[str], timeout: float, output_dir: str,
                downloads: Callable[[], Sequence[InputDownload]] | None,
                output_format: str | None, names: tuple[str, ...],
                scratch: str | None, input_format: str,
                table_pieces: Callable[[], Sequence[TablePiece]] | None,
                passthrough_columns: tuple[str, ...], stop: threading.Event) -> RunResult:
        for _ in range(WORKER_LOSSES):
            log_path = self._log_path()
            try:
                with slot.starting:
                    worker, init_log, failure = self._worker_in(slot, output_dir)
                    if failure is not None:
                        return failure
                    request = RunRequest(next(self._ids), tuple(paths), output_dir,
                                         str(log_path),
                                         tuple(downloads()) if downloads else (),
                                         output_format, names, scratch, input_format,
                                         tuple(table_pieces()) if table_pieces else (),
                                         passthrough_columns)
                    box = worker.send(request)
                try:
                    started = self._await_start(worker, request, box, stop)
                    if isinstance(started, _Ended):
                        continue  # the worker died before this run() started: not an attempt
                    if isinstance(started, RunResult):
                        return replace(started, log=init_log + _read_tail(log_path))
                    downloaded_at = time.monotonic()
                    answer = _answer(box, timeout, stop)
                except _Stopped:
                    worker.kill()
                    self._forget(slot, worker)
                    return _stopped()
                if answer is None:
                    worker.kill(dump_stacks=True)
                    self._forget(slot, worker)
                log = init_log + _read_tail(log_path)
                return replace(self._result(answer, timeout, log), downloaded_at=downloaded_at,
                               input_bytes=started.input_bytes, gpu=self.gpu_for(slot.index))
            finally:
                log_path.unlink(missing_ok=True)
        raise StorageUnavailable(f"{WORKER_LOSSES} worker processes ended before this "
                                "mini-batch's run() could start")

    def _worker_in(self, slot: _Slot, output_dir: str) -> tuple[_Worker, str, RunResult | None]:
        """The slot's live worker, started if needed: (worker, init log, init failure)."""
        worker = slot.worker
        if worker is not None and worker.alive():
            return worker, "", None
        if self._closed:
            raise PoolClosed("worker pool is closed")
        self._forget(slot, worker)
        return self._start(slot, output_dir)

    def _await_start(self, worker: _Worker, request: RunRequest, box: queue.SimpleQueue,
                     stop: threading.Event) -> Started | RunResult | _Ended:
        """Wait until the request's run() starts; a failed download is a result or raises.

        The download limit counts from when the request is next in line, so a mini-batch
        that waits behind a long run() is not failed for it.
        """
        limit = download_limit(len(request.paths) or len(request.table_pieces))
        while True:
            if stop.is_set():
                raise _Stopped()
            since = worker.head_since(request.id)
            wait = READ_POLL if since is None else since + limit - time.monotonic()
            message = _get(box, min(max(wait, 0.0), STOP_POLL))
            if message is not None:
                break
            if since is not None and time.monotonic() >= since + limit:
                worker.kill(dump_stacks=True)
                raise StorageUnavailable(f"input download timed out after {limit:g}s")
        if isinstance(message, _Ended):
            return message
        if not isinstance(message, Started) or message.request != request.id:
            # An answer out of protocol: nothing later from this worker can be trusted.
            worker.kill()
            raise StorageUnavailable(f"worker answered out of turn: {type(message).__name__}")
        if message.error is None:
            return message
        worker.forget(request.id)
        if message.missing:
            return RunResult(FAILED, 0, None, (), message.error, None, "")
        if message.errno is not None:
            raise OSError(message.errno, message.error)
        raise StorageUnavailable(message.error)

    def _start(self, slot: _Slot, output_dir: str) -> tuple[_Worker, str, RunResult | None]:
        """Start a worker in `slot`; on init failure return the failed result too."""
        log_path = self._log_path()
        gpu = self.gpu_for(slot.index)
        process, parent_conn = start_worker(
            (self.spec, str(log_path)),
            self._environment(gpu, output_dir), self._account, self.spec.python,
            self.spec.runtime_path)
        try:
            reply = _init_reply(parent_conn, self._init_timeout)
            if reply is None and process.is_alive():
                if DUMP_SIGNAL is not None:
                    os.kill(process.pid, DUMP_SIGNAL)
                    time.sleep(DUMP_WAIT)
            log = _read_tail(log_path)
        finally:
            log_path.unlink(missing_ok=True)
        worker = _Worker(process, parent_conn)
        if isinstance(reply, Reply) and reply.ok:
            with self._changed:
                if self._closed:
                    worker.kill()
                    raise PoolClosed("worker pool is closed")
                slot.worker = worker
            return worker, log, None
        worker.kill()
        if reply is None:
            failure = RunResult(FAILED, 0, None, (),
                                f"init() timed out after {self._init_timeout:g}s",
                                _stack_dump(log), log)
        elif isinstance(reply, _Ended):
            why = reply.why or f"worker process exited with code {process.exitcode}"
            failure = RunResult(FAILED, 0, None, (), why, _stack_dump(log), log)
        else:
            failure = RunResult(FAILED, 0, None, (), reply.error, reply.traceback, log)
        return worker, log, replace(failure, startup_failed=True)

    def _environment(self, gpu: str | None, output_dir: str) -> dict[str, str]:
        """The worker's environment: see isolation.worker_environment."""
        batchfn = {"AZUREML_MODEL_DIR": self.spec.model_dir,
                   "AZUREML_BI_OUTPUT_PATH": output_dir}
        if gpu is not None:
            batchfn["CUDA_VISIBLE_DEVICES"] = gpu
        if self.spec.cpu_threads is not None:
            # Read once by torch/numpy at import; a value the host was started with is kept.
            batchfn.update(dict.fromkeys(CPU_THREAD_VARIABLES, str(self.spec.cpu_threads)))
        if self._temp is not None:
            batchfn.update(dict.fromkeys(TEMP_VARIABLES, str(self._temp)))
        if self.spec.python is not None:
            # The environment's console scripts (and `python`) first, as in an activated venv.
            folder = os.path.dirname(os.path.dirname(self.spec.python))
            batchfn["VIRTUAL_ENV"] = folder
            batchfn["PATH"] = os.pathsep.join(
                [os.path.join(folder, "bin"), os.environ.get("PATH", os.defpath)])
        return worker_environment(os.environ, batchfn, self.spec.environment, self._account,
                                  None if self._home is None else str(self._home))

    def _forget(self, slot: _Slot, worker: _Worker | None) -> None:
        with self._changed:
            if slot.worker is worker:
                slot.worker = None

    @staticmethod
    def _result(answer: Reply | _Ended | Started | None, timeout: float,
                log: str) -> RunResult:
        if isinstance(answer, Reply):
            status = SUCCEEDED if answer.ok else FAILED
            return RunResult(status, answer.rows, answer.part, answer.missing, answer.error,
                             answer.traceback, log, failed=answer.failed,
                             failed_inputs=answer.failed_inputs, given=answer.given,
                             run_seconds=answer.seconds)
        if answer is None:
            return RunResult(TIMED_OUT, 0, None, (), f"timed out after {timeout:g}s",
                             _stack_dump(log), log)
        why = answer.why if isinstance(answer, _Ended) else "worker answered out of turn"
        return RunResult(FAILED, 0, None, (), why, _stack_dump(log), log)

    def _retire(self, worker: _Worker) -> None:
        log_path = self._log_path()
        try:
            box = worker.send(ShutdownRequest(next(self._ids), str(log_path)))
            _get(box, SHUTDOWN_WAIT)
        finally:
            worker.kill()
            log_path.unlink(missing_ok=True)

    def _log_path(self) -> Path:
        return self._scratch / f"{uuid.uuid4().hex}.log"


def _get(box: queue.SimpleQueue, timeout: float):  # noqa: ANN202 - a message or None
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        return None


def _answer(box: queue.SimpleQueue, timeout: float, stop: threading.Event):  # noqa: ANN202
    """run()'s answer within `timeout` (None: none came); raises _Stopped once `stop` is set."""
    deadline = time.monotonic() + timeout
    while True:
        if stop.is_set():
            raise _Stopped()
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        answer = _get(box, min(left, STOP_POLL))
        if answer is not None:
            return answer


def _stopped() -> RunResult:
    return RunResult(STOPPED, 0, None, (), "stopped: another copy finished first", None, "")


def _receive(conn: Connection) -> Started | Reply:
    """The worker's next message, bounded (protocol.bounded); only the pool's message
    classes are ever unpickled, and only a message of at most MAX_PIPE_MESSAGE_BYTES."""
    return bounded(receive(conn, (Started, Reply), (EncodedPart, FailedInput),
                           max_bytes=MAX_PIPE_MESSAGE_BYTES))


def _init_reply(conn: Connection, timeout: float) -> Reply | _Ended | None:
    """The worker's answer to init(): its Reply, _Ended if it died, None on timeout."""
    try:
        if not conn.poll(timeout):
            return None
        reply = _receive(conn)
    except (EOFError, OSError):
        return _Ended("")  # the caller names the exit code
    except Exception as exc:  # noqa: BLE001 - a result the host cannot unpickle
        return _Ended(f"could not read init() result: {type(exc).__name__}: {exc}")
    return reply if isinstance(reply, Reply) else _Ended("worker answered out of turn")


def _read_tail(path: Path, limit: int = LOG_LIMIT) -> str:
    """The last `limit` bytes of a log file as text, noting what was cut.

    The worker wrote it: it is opened without following a link (see isolation.py).
    """
    try:
        with open_worker_file(path.parent, path.name) as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - limit))
            data = file.read()
    except FileNotFoundError:
        return ""
    except UnsafeWorkerFile as exc:
        return f"[batchfn: the attempt's log was not read: {exc}]\n"
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        return f"[... {size - limit} bytes of earlier output cut ...]\n{text}"
    return text


def _stack_dump(log: str) -> str | None:
    """The Python stacks faulthandler wrote into the log (a crash or a timeout), if any."""
    markers = [log.rfind(m) for m in ("Fatal Python error", "Current thread 0x", "Thread 0x")]
    found = [m for m in markers if m >= 0]
    return log[min(found):] if found else None
