"""The worker process: runs a user's Azure ML scoring script, one mini-batch at a time.

This module is the child side of `pool.py`. It is started with multiprocessing's "spawn"
context (a fresh interpreter, so CUDA works), sets up the Azure ML environment, imports the
scoring script by path, calls `init()` once, then answers `RunRequest`s until told to shut
down or its pipe closes. Everything a script prints or logs during an attempt goes to that
attempt's log file (file descriptors 1 and 2 are redirected, so output of C extensions and
child processes is captured too). It keeps imports light: a worker that never sees pandas
does not pay for it.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.scoring.batch import InputFile

if TYPE_CHECKING:
    from shared.scoring.inputs import InputDownloader
    from shared.storage import StorageAccount

# The pool sends this signal before killing a timed-out worker, so the log shows where
# run() was stuck.
DUMP_SIGNAL = getattr(signal, "SIGUSR1", None)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The thread-pool sizes of OpenMP (torch, onnxruntime, oneDNN in TensorFlow), MKL, OpenBLAS.
CPU_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to load one deployment's scoring script."""

    script_path: str
    code_dir: str
    model_dir: str
    logging_level: str = "info"
    environment: dict[str, str] = field(default_factory=dict)
    cpu_threads: int | None = None  # math-library threads per worker (None: libraries decide)
    storage: StorageAccount | None = None  # where RunRequest inputs are downloaded from


@dataclass(frozen=True)
class RunRequest:
    """One run() call: on `paths`, after downloading `inputs[i]` to `paths[i]` (if any)."""

    paths: tuple[str, ...]
    output_dir: str
    log_path: str
    inputs: tuple[InputFile, ...] = ()


@dataclass(frozen=True)
class Downloaded:
    """A worker's report that a RunRequest's inputs are in place (`error` None), or why not."""

    error: str | None = None
    missing: bool = False  # an input blob does not exist: the attempt fails
    errno: int | None = None  # the local folder cannot take the inputs (full, read-only)


@dataclass(frozen=True)
class ShutdownRequest:
    log_path: str


@dataclass(frozen=True)
class Reply:
    """A worker's answer: `ok` with `value` (run()'s return) or an error and its traceback."""

    ok: bool
    value: Any = None
    returned_list: bool = False
    rows: int = 0
    error: str | None = None
    traceback: str | None = None


def describe(exc: BaseException) -> str:
    """One line: "ExceptionType: message" (just the type when the message is empty)."""
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def serve(conn: Connection, spec: WorkerSpec, gpu: str | None, output_dir: str,
          init_log_path: str) -> None:
    """Entry point of a worker process: init, then answer requests until shutdown or EOF.

    `output_dir` is AZUREML_BI_OUTPUT_PATH during init(): the folder of the job whose
    mini-batch started this worker; each RunRequest then names its own job's folder.
    """
    _apply_environment(spec, gpu, output_dir)
    _configure_logging(spec.logging_level)
    with captured_output(init_log_path):
        script, reply = _load_and_init(spec)
    conn.send(reply)
    if not reply.ok:
        return
    inputs = _InputFetcher(spec.storage)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the host went away
        if isinstance(request, ShutdownRequest):
            with captured_output(request.log_path):
                conn.send(_call_shutdown(script))
            return
        os.environ["AZUREML_BI_OUTPUT_PATH"] = request.output_dir
        with captured_output(request.log_path):
            if request.inputs:
                downloaded = inputs.fetch(request)
                conn.send(downloaded)
                if downloaded.error is not None:
                    continue
            reply = _run(script, list(request.paths))
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result is the script's fault
            conn.send(Reply(ok=False, error=f"run() returned a value that cannot be sent to the "
                                            f"host: {describe(exc)}",
                            traceback=traceback.format_exc()))


class _InputFetcher:
    """The worker's input downloads, on an InputDownloader made at its first mini-batch."""

    def __init__(self, storage: StorageAccount | None) -> None:
        self._storage = storage
        self._downloader: InputDownloader | None = None

    def fetch(self, request: RunRequest) -> Downloaded:
        """Download the request's inputs to its paths; any failure is reported, not raised."""
        # Imported here: a worker whose host sends local paths never loads the async SDK.
        from shared.scoring.inputs import InputDownloader, InputMissing, is_local_write_error

        try:
            if self._storage is None:
                raise RuntimeError("the worker has no storage account to download inputs from")
            if self._downloader is None:
                self._downloader = InputDownloader(self._storage)
            self._downloader.download(request.inputs, [Path(p) for p in request.paths])
        except InputMissing as exc:
            return Downloaded(error=str(exc), missing=True)
        except Exception as exc:  # noqa: BLE001 - reported to the host, which raises it
            errno = exc.errno if is_local_write_error(exc) else None
            return Downloaded(error=describe(exc), errno=errno)
        return Downloaded()


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


def _apply_environment(spec: WorkerSpec, gpu: str | None, output_dir: str) -> None:
    os.environ["AZUREML_MODEL_DIR"] = spec.model_dir
    os.environ["AZUREML_BI_OUTPUT_PATH"] = output_dir
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if spec.cpu_threads is not None:
        # Set before the script imports torch/numpy, which read these once. A value the
        # host was started with is kept.
        for name in CPU_THREAD_VARIABLES:
            os.environ.setdefault(name, str(spec.cpu_threads))
    # The deployment's own variables win, including an explicit CUDA_VISIBLE_DEVICES.
    os.environ.update(spec.environment)
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
        return None, Reply(ok=False, error=f"could not load scoring script: {describe(exc)}",
                           traceback=traceback.format_exc())
    try:
        script.init()
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        return None, Reply(ok=False, error=f"init() failed: {describe(exc)}",
                           traceback=traceback.format_exc())
    return script, Reply(ok=True)


def _import_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # so pickling and `import score` see the same module
    spec.loader.exec_module(module)
    return module


def _run(script: Any, paths: list[str]) -> Reply:
    try:
        value = script.run(paths)
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        return Reply(ok=False, error=describe(exc), traceback=traceback.format_exc())
    if isinstance(value, (list, tuple)):
        return Reply(ok=True, value=list(value), returned_list=True, rows=len(value))
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return Reply(ok=True, value=value, rows=len(value))
    message = (f"TypeError: run() must return a pandas.DataFrame or a list, "
               f"got {type(value).__name__}")
    print(message, file=sys.stderr)
    return Reply(ok=False, error=message)


def _call_shutdown(script: Any) -> Reply:
    shutdown: Callable[[], Any] | None = getattr(script, "shutdown", None)
    if not callable(shutdown):
        return Reply(ok=True)
    try:
        shutdown()
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        return Reply(ok=False, error=f"shutdown() failed: {describe(exc)}",
                     traceback=traceback.format_exc())
    return Reply(ok=True)
