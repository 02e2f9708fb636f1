"""What crosses the pipe between the scoring host and a worker process.

The host pickles requests to the worker; the worker pickles its answers, which the host
unpickles allowing only these classes and the plain values in them (the host's
isolation.receive), since an arbitrary pickle runs code. Every class here is a frozen
dataclass of plain values, importable on any Python the worker runs on.
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass, field, replace

from shared.worker.encoding import EncodedPart
from shared.worker.tabular.failures import MAX_ERROR_CHARS, FailedInput

# The pool sends this signal before killing a timed-out worker, so the log shows where
# run() was stuck.
DUMP_SIGNAL = getattr(signal, "SIGUSR1", None)
# The thread-pool sizes of OpenMP (torch, onnxruntime, oneDNN in TensorFlow), MKL, OpenBLAS.
CPU_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Failed inputs one reply lists; beyond that they are only counted (a reply stays small).
MAX_LISTED_FAILURES = 1000
# What a worker may hand back, checked by the worker and again by the host (which trusts no
# worker): an error message and a traceback are cut to these many characters (the middle
# goes), one mini-batch's encoded output (its part, csv header included) may hold this many
# bytes, and a pipe message this many (its length is read before anything is unpickled).
MAX_ERROR_MESSAGE_CHARS = 2000
MAX_TRACEBACK_CHARS = 64 * 1024
MAX_PART_BYTES = 64 * 1024 * 1024
MAX_PIPE_MESSAGE_BYTES = MAX_PART_BYTES + 8 * 1024 * 1024
MAX_FILE_NAME_CHARS = 1024  # an input's name, as a failed input names it


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to load one deployment's scoring script.

    It holds no storage credential: inputs arrive as signed read URLs.
    """

    script_path: str
    code_dir: str
    model_dir: str
    logging_level: str = "info"
    environment: dict[str, str] = field(default_factory=dict)
    cpu_threads: int | None = None  # math-library threads per worker (None: libraries decide)
    # What separates a DataFrame's columns in the azureml output format: a space for scoring
    # scripts, a comma for the built-in MLflow scorer (as Azure ML writes each).
    azureml_separator: str = " "
    # The deployment environment's interpreter, and the folder holding the worker runtime
    # it imports (None: the host's own interpreter and sys.path).
    python: str | None = None
    runtime_path: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """One run() call on `paths`, after downloading `downloads[i]` to `paths[i]` (if any).

    The worker starts the downloads as soon as the request arrives, even while an earlier
    request's run() works; run()'s rows come back encoded for `output_format` (None: only
    counted), with `names` (the inputs' display names) naming the files a short return
    left out. `scratch` is the folder the inputs live in, removed once run() returned.

    A tabular request has no paths: run() gets the rows of `table_pieces` (ranges of
    `input_format` files) as one DataFrame, read as soon as the request arrives, and
    `passthrough_columns` are copied from those rows to run()'s output rows.
    """

    id: int
    paths: tuple[str, ...]
    output_dir: str
    log_path: str
    downloads: tuple[InputDownload, ...] = ()
    output_format: str | None = None
    names: tuple[str, ...] = ()
    scratch: str | None = None
    input_format: str = "files"
    table_pieces: tuple[TablePiece, ...] = ()
    passthrough_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Started:
    """A worker's report that a request's run() starts now (`error` None), or why it cannot.

    Sent when the inputs are in place and every earlier request has been answered, so the
    host times run() from here.
    """

    request: int
    error: str | None = None
    missing: bool = False  # an input blob does not exist: the attempt fails
    errno: int | None = None  # the local folder cannot take the inputs (full, read-only)
    input_bytes: int = 0  # what the worker read for the request (files, or row ranges)


@dataclass(frozen=True)
class ShutdownRequest:
    id: int
    log_path: str


@dataclass(frozen=True)
class Reply:
    """A worker's answer to a request (`request` 0: to init()): `ok`, or an error.

    For a run(): `rows` returned, their encoded `part`, and the positions of the inputs a
    short return left out (see encoding.EncodedResult). `failed` lists the inputs that
    failed on their own (rows that could not be read, failures reported from inside run():
    tabular/failures.py), each file named by its display name, at most
    MAX_LISTED_FAILURES of them; `failed_inputs` counts them all (rows, or files).
    `given` is the number of rows run() got (tabular requests). `seconds` is the time the
    worker spent from calling run() to having its return encoded.
    """

    request: int
    ok: bool
    rows: int = 0
    part: EncodedPart | None = None
    missing: tuple[int, ...] = ()
    error: str | None = None
    traceback: str | None = None
    failed: tuple[FailedInput, ...] = ()
    failed_inputs: int = 0
    given: int = 0
    seconds: float = 0.0  # run() and the encoding of its return, by the worker's clock


def describe(exc: BaseException) -> str:
    """One line: "ExceptionType: message" (just the type when the message is empty), of at
    most MAX_ERROR_MESSAGE_CHARS."""
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    return clipped(f"{name}: {message}" if message else name, MAX_ERROR_MESSAGE_CHARS)


def clipped(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and its end (where an
    exception's message and a traceback's last frames are) with a note of what was cut."""
    if len(text) <= limit:
        return text
    note = f" [... {len(text) - limit} characters cut ...] "
    keep = max(0, limit - len(note))
    head = keep // 4
    return text[:head] + note + text[len(text) - (keep - head):]


def bounded(message: Started | Reply) -> Started | Reply:
    """`message` with its texts clipped (error, traceback, failed inputs' names and
    messages) and at most MAX_LISTED_FAILURES failed inputs listed: the worker sends its
    messages so, and the host, which trusts no worker, bounds what it receives again."""
    if isinstance(message, Started):
        if message.error is None or len(message.error) <= MAX_ERROR_MESSAGE_CHARS:
            return message
        return replace(message, error=clipped(message.error, MAX_ERROR_MESSAGE_CHARS))
    if (len(message.error or "") <= MAX_ERROR_MESSAGE_CHARS
            and len(message.traceback or "") <= MAX_TRACEBACK_CHARS
            and len(message.failed) <= MAX_LISTED_FAILURES
            and all(len(f.error) <= MAX_ERROR_CHARS and len(f.file) <= MAX_FILE_NAME_CHARS
                    for f in message.failed)):
        return message
    return replace(
        message,
        error=None if message.error is None else clipped(message.error,
                                                         MAX_ERROR_MESSAGE_CHARS),
        traceback=None if message.traceback is None else clipped(message.traceback,
                                                                 MAX_TRACEBACK_CHARS),
        failed=tuple(replace(f, file=clipped(f.file, MAX_FILE_NAME_CHARS),
                             error=clipped(f.error, MAX_ERROR_CHARS))
                     for f in message.failed[:MAX_LISTED_FAILURES]))


@dataclass(frozen=True)
class InputDownload:
    """One input to fetch: a short-lived read URL (never logged: it carries a signature)."""

    url: str
    display_name: str


@dataclass(frozen=True)
class TablePiece:
    """One planned row range to read: `file` names it in outputs and errors, `url` is a
    short-lived read URL of the file (never logged: it carries a signature), `size` and
    `etag` are the file's when it was planned, `row_range` is `RowRange.to_list()`."""

    file: str
    url: str
    size: int
    etag: str | None
    row_range: tuple[int, ...]


# Errors of the local folder (full, read-only, not a folder): worth trying another folder.
LOCAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EROFS,
                                errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST})


def is_local_write_error(exc: BaseException) -> bool:
    """True for an OSError of the local file system (not of the network or storage)."""
    return isinstance(exc, OSError) and exc.errno in LOCAL_WRITE_ERRORS
