"""The worker process: runs a user's Azure ML scoring script, one mini-batch at a time.

It is started as a fresh interpreter (so CUDA works) by the scoring host
(shared/scoring/isolation.py), with the Azure ML environment and nothing of the host's
secrets. It speaks protocol.py on its pipe: imports the scoring script by path, calls
`init()` once, then answers `RunRequest`s until told to shut down or its pipe closes. A
request's inputs download (from signed URLs: the worker holds no storage credential) as soon
as it arrives, so the next mini-batch's files arrive while run() works on this one; run()'s
return is encoded into output lines here, not in the host. A tabular request's rows are read
the same way (tables.py) and run() gets a DataFrame; inputs that fail on their own
(unparseable rows, failures that run() reports through tabular.failures) are collected and
sent back with the reply. Everything a script prints or logs during an attempt goes to that
attempt's log file (file descriptors 1 and 2 are redirected, so output of C extensions and
child processes is captured too). It keeps imports light: a worker that never sees pandas
does not pay for it.
"""

from __future__ import annotations

import concurrent.futures
import faulthandler
import importlib.util
import logging
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.worker.encoding import EncodedPart, encode_result
from shared.worker.input_errors import InputMissing
from shared.worker.portable import zip_equal
from shared.worker.protocol import (
    DUMP_SIGNAL,
    MAX_LISTED_FAILURES,
    MAX_PART_BYTES,
    Reply,
    RunRequest,
    ShutdownRequest,
    Started,
    WorkerSpec,
    bounded,
    describe,
    is_local_write_error,
)
from shared.worker.tabular import failures
from shared.worker.tabular.failures import FailedInput

if TYPE_CHECKING:
    from shared.worker.downloads import InputDownloader
    from shared.worker.tables import TableLoader
    from shared.worker.tabular.read import TabularBatch

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(conn: Connection) -> None:
    """Entry point of a worker process started by isolation.start_worker: its arguments
    arrive first on the pipe (see serve)."""
    spec, init_log_path = conn.recv()
    serve(conn, spec, init_log_path)


def serve(conn: Connection, spec: WorkerSpec, init_log_path: str) -> None:
    """Init, then answer requests until shutdown or EOF.

    AZUREML_BI_OUTPUT_PATH is, during init(), the folder of the job whose mini-batch
    started this worker; each RunRequest then names its own job's folder. A thread
    receives requests and starts their downloads at once; this thread runs them in
    the order they came.
    """
    _enable_stack_dumps()
    _configure_logging(spec.logging_level)
    with captured_output(init_log_path):
        script, reply = _load_and_init(spec)
    conn.send(bounded(reply))
    if not reply.ok:
        return
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    downloads = _Downloads()
    threading.Thread(target=_receive, args=(conn, requests, downloads),
                     name="batchfn-requests", daemon=True).start()
    try:
        _answer(conn, script, requests, spec.azureml_separator)
    finally:
        downloads.close()


def _answer(conn: Connection, script: Any, requests: queue.SimpleQueue[Any],
            azureml_separator: str) -> None:
    """Run the queued requests in order until shutdown or the end of the pipe."""
    while True:
        item = requests.get()
        if item is None:
            return  # the host went away
        if isinstance(item, ShutdownRequest):
            with captured_output(item.log_path):
                reply = _call_shutdown(script)
            conn.send(bounded(replace(reply, request=item.id)))
            return
        request, download = item
        os.environ["AZUREML_BI_OUTPUT_PATH"] = request.output_dir
        with captured_output(request.log_path):
            started, table = _wait_for_inputs(request, download)
            conn.send(bounded(started))
            if started.error is None:
                began = time.perf_counter()
                reply = _run(script, request, table, azureml_separator)
                reply = replace(reply, seconds=time.perf_counter() - began)
            if request.scratch:
                shutil.rmtree(request.scratch, ignore_errors=True)
        if started.error is None:
            conn.send(bounded(reply))


class _Downloads:
    """The worker's input downloader and table loader, each made on first use."""

    def __init__(self) -> None:
        self._downloader: InputDownloader | None = None
        self._tables: TableLoader | None = None

    def start(self, request: RunRequest) -> concurrent.futures.Future:
        """Start fetching the request's inputs: files to download, or rows to read."""
        if request.table_pieces:
            from shared.worker.tables import TableLoader

            if self._tables is None:
                self._tables = TableLoader()
            return self._tables.start(request.input_format, request.table_pieces)
        # Imported here: a worker whose host sends local paths never loads aiohttp.
        from shared.worker.downloads import InputDownloader

        if self._downloader is None:
            self._downloader = InputDownloader()
        return self._downloader.start(request.downloads, [Path(p) for p in request.paths])

    def close(self) -> None:
        if self._downloader is not None:
            self._downloader.close()
        if self._tables is not None:
            self._tables.close()


def _receive(conn: Connection, requests: queue.SimpleQueue[Any], downloads: _Downloads) -> None:
    """Queue each request with its download, started at once (None at the end)."""
    while True:
        try:
            request = conn.recv()
        except Exception:  # noqa: BLE001 - EOF, or a request that cannot be read: stop
            requests.put(None)
            return
        if isinstance(request, ShutdownRequest):
            requests.put(request)
            return
        download = None
        if request.downloads or request.table_pieces:
            try:
                download = downloads.start(request)
            except Exception as exc:  # noqa: BLE001 - reported with the request
                download = concurrent.futures.Future()
                download.set_exception(exc)
        requests.put((request, download))


def _wait_for_inputs(request: RunRequest, download: concurrent.futures.Future | None
                     ) -> tuple[Started, TabularBatch | None]:
    """The request's Started report once its inputs are in place (failures are reported),
    with the rows of a tabular request."""
    if download is None:
        return Started(request.id, input_bytes=_input_bytes(request)), None
    try:
        loaded = download.result()
    except InputMissing as exc:
        return Started(request.id, error=str(exc), missing=True), None
    except Exception as exc:  # noqa: BLE001 - reported to the host, which raises it
        errno = exc.errno if is_local_write_error(exc) else None
        return Started(request.id, error=describe(exc), errno=errno), None
    return (Started(request.id, input_bytes=_input_bytes(request)),
            loaded if request.table_pieces else None)


def _input_bytes(request: RunRequest) -> int:
    """Bytes read for the request: its downloaded files, or its row ranges."""
    if request.table_pieces:
        return sum(max(0, piece.row_range[3] - piece.row_range[2])
                   for piece in request.table_pieces)
    return sum(os.path.getsize(path) for path in request.paths if os.path.exists(path))


@contextmanager
def captured_output(path: str) -> Iterator[None]:
    """Send fds 1 and 2 (stdout, stderr, logging, child processes) to `path` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
    finally:
        os.close(target)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # a script may have closed or replaced the stream
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _enable_stack_dumps() -> None:
    # The environment (AZUREML_*, CUDA_VISIBLE_DEVICES, the deployment's variables) was
    # given at the process's start: isolation.worker_environment.
    faulthandler.enable(file=sys.stderr, all_threads=True)
    if DUMP_SIGNAL is not None:
        faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True)


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def _load_and_init(spec: WorkerSpec) -> tuple[Any, Reply]:
    script_path = Path(spec.script_path)
    for folder in (str(script_path.parent), spec.code_dir):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    os.chdir(spec.code_dir)  # Azure ML runs scripts from the code folder
    try:
        script = _import_script(script_path)
        for name in ("init", "run"):
            if not callable(getattr(script, name, None)):
                raise AttributeError(f"scoring script {script_path.name} has no {name}() function")
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a script is a failure too
        traceback.print_exc()
        return None, Reply(0, ok=False,
                           error=f"could not load scoring script: {describe(exc)}",
                           traceback=traceback.format_exc())
    try:
        script.init()
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        return None, Reply(0, ok=False, error=f"init() failed: {describe(exc)}",
                           traceback=traceback.format_exc())
    return script, Reply(0, ok=True)


def _import_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # so pickling and `import score` see the same module
    spec.loader.exec_module(module)
    return module


def _run(script: Any, request: RunRequest, table: TabularBatch | None,
         azureml_separator: str) -> Reply:
    """Call run() on the request's files or rows; encode what it returned.

    Failures reported from inside run() (tabular/failures.py) are collected; with the
    rows the reader could not parse they make the reply's failed inputs. A tabular
    mini-batch whose rows all failed to parse does not call run().
    """
    unread = table.failed if table is not None else ()
    if table is not None and not len(table.frame):
        return _reply(request, 0, EncodedPart(b"") if request.output_format else None, (),
                      unread, 0, ())
    argument = table.frame if table is not None else list(request.paths)
    try:
        with failures.collecting() as collector:
            value = script.run(argument)
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        return Reply(request.id, ok=False, error=describe(exc), traceback=traceback.format_exc())
    pandas = sys.modules.get("pandas")
    if isinstance(value, (list, tuple)):
        value, returned_list = list(value), True
    elif pandas is not None and isinstance(value, pandas.DataFrame):
        returned_list = False
    else:
        message = (f"TypeError: run() must return a pandas.DataFrame or a list, "
                   f"got {type(value).__name__}")
        print(message, file=sys.stderr)
        return Reply(request.id, ok=False, error=message)
    if request.passthrough_columns and table is not None:
        from shared.worker.tabular.passthrough import PassthroughError, attach_passthrough

        try:
            value = attach_passthrough(table.frame, value, request.passthrough_columns)
        except PassthroughError as exc:
            print(f"PassthroughError: {exc}", file=sys.stderr)
            return Reply(request.id, ok=False, error=describe(exc))
        returned_list = False
    names = () if table is not None else (
        request.names or tuple(os.path.basename(path) for path in request.paths))
    try:
        encoded = encode_result(value, returned_list, request.output_format, names,
                                azureml_separator)
    except Exception as exc:  # noqa: BLE001 - a return the output format cannot hold
        traceback.print_exc()
        return Reply(request.id, ok=False,
                     error=f"run()'s return cannot be written as {request.output_format} "
                           f"output: {describe(exc)}",
                     traceback=traceback.format_exc())
    size = len(encoded.part.data) + len(encoded.part.header) if encoded.part else 0
    if size > MAX_PART_BYTES:
        message = (f"run()'s return encodes to {size:,} bytes of {request.output_format} "
                   f"output, more than the {MAX_PART_BYTES:,} one mini-batch may produce: "
                   "use a smaller mini_batch_size")
        print(message, file=sys.stderr)
        return Reply(request.id, ok=False, error=message)
    reported = collector.items
    if table is None:  # name a file by its display name, not the local path run() got
        display = dict(zip_equal(request.paths, names))
        reported = tuple(replace(f, file=display.get(f.file, f.file)) for f in reported)
    return _reply(request, encoded.rows, encoded.part, encoded.missing, (*unread, *reported),
                  len(table.frame) if table is not None else 0, names)


def _reply(request: RunRequest, rows: int, part: EncodedPart | None, missing: tuple[int, ...],
           failed: tuple[FailedInput, ...], given: int, names: tuple[str, ...]) -> Reply:
    """A successful run()'s reply; at most MAX_LISTED_FAILURES failures listed, all counted.

    In a mini-batch of files a file of the mini-batch counts once however many of its rows
    failed (a report naming another file is listed, not counted).
    """
    if request.table_pieces:
        count = sum(f.rows for f in failed)
    else:
        count = len({f.file for f in failed} & set(names))
    return Reply(request.id, ok=True, rows=rows, part=part, missing=missing,
                 failed=failed[:MAX_LISTED_FAILURES], failed_inputs=count, given=given)


def _call_shutdown(script: Any) -> Reply:
    shutdown: Callable[[], Any] | None = getattr(script, "shutdown", None)
    if not callable(shutdown):
        return Reply(0, ok=True)
    try:
        shutdown()
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        return Reply(0, ok=False, error=f"shutdown() failed: {describe(exc)}",
                     traceback=traceback.format_exc())
    return Reply(0, ok=True)
