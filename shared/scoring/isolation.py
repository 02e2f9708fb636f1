"""What keeps the host's secrets out of reach of the scoring scripts its workers run.

A scoring worker process runs user code, so the host starts it (`start_worker`):
- with an environment built from an allow-list (`worker_environment`): the locale, paths,
  Python, CUDA and math-library settings, never the host's storage connection settings,
  keys, connection strings or identity endpoint variables, unless the deployment's own
  environment_variables set one on purpose;
- under the deployment's own OS account when the host runs as root, as the Functions
  images do (`WorkerAccount`, chosen by worker_users.py): that account cannot read the
  host's or another deployment's `/proc/<pid>/environ` or memory, signal their processes,
  nor read files only root or another deployment may read;
- with `python -I` (no user site-packages, no PYTHON* variables), with no file descriptor
  of the host's but its own pipe, in the folder `/`, leading a session and process group
  of its own; what it leaves behind when its slot ends is killed (`WorkerProcess.kill`,
  leftover_processes.py);
- with its stdout and stderr a pipe of their own that the host relays to its log line by
  line (`relay_output`): each line prefixed with the worker's pid, its control characters
  escaped and its length cut, and at most WORKER_LINES_PER_MINUTE lines a minute, so a
  script can neither forge host log lines nor flood the log (what it prints while a
  mini-batch runs goes to that attempt's log instead, see worker/serve.py).
The host process is made non-dumpable before its first worker starts (`protect_host`), so
that a worker of the same account cannot read its environment or memory through /proc, nor
attach a debugger; the files a worker wrote are opened without following links
(`worker_files`, `open_worker_file`), so a link cannot make the host read one of its own
files into a job's logs or outputs; and what a worker sends the host is unpickled with only
the pool's message classes allowed (`receive`), since an arbitrary pickle runs code, and
only once its length is known to be within bounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import IO, Any, BinaryIO

from shared.scoring import leftover_processes
from shared.worker.protocol import CPU_THREAD_VARIABLES

log = logging.getLogger("batchfn.scoring")

NOBODY_ID = 65534  # the conventional uid and gid of `nobody`, where /etc/passwd lacks it

# Host variables a worker keeps: none names or holds a credential.
ALLOWED_VARIABLES = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TEMP", "TMP", "SHELL",
    "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH", "CUDA_MODULE_LOADING", "CUDA_DEVICE_ORDER",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
    "PYTORCH_CUDA_ALLOC_CONF", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "NO_PROXY", "no_proxy",
})
ALLOWED_PREFIXES = ("LC_",)
# Kept only without user:password in them (a proxy's credentials are the host's).
PROXY_VARIABLES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                             "http_proxy", "https_proxy", "all_proxy"})
# A worker in the host's own account keeps the host's (that account's home is no secret of
# the host's); a worker under another account gets that account's.
ACCOUNT_VARIABLES = frozenset({"HOME", "USER", "LOGNAME"})

PLAIN_TYPES = (int, float, str, bytes, type(None))  # bool is an int
# What the host's log takes of a worker's own stdout and stderr (outside its attempts).
MAX_WORKER_LINE_BYTES = 2000
WORKER_LINES_PER_MINUTE = 200
# Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: a line of
# a worker's output shows them escaped, so it cannot start a new log line or move the cursor.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
IMPORT_TRIAL_SECONDS = 60
WORKER_MODULE = "shared.worker.serve"
PR_SET_DUMPABLE = 4  # <linux/prctl.h>
# Started with `python -I -c` (isolated: no user site-packages, no PYTHON* variables, no
# current folder on sys.path): the paths to import from arrive first on the pipe, then the
# worker's arguments (serve.main). In the host's interpreter they replace sys.path (the
# host's own); in a deployment's environment they come before its own (the worker
# runtime's folder). Only the standard library is imported before sys.path is set.
BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "paths, replace = conn.recv()\n"
    "sys.path[:] = paths if replace else paths + sys.path\n"
    f"from {WORKER_MODULE} import main\n"
    "main(conn)\n"
)


class WorkerAccountError(RuntimeError):
    """A deployment's workers cannot run as its own account here (worker_users.py)."""


class UnsafeWorkerFile(OSError):
    """A file a worker wrote is a link or not a regular file: the host does not read it."""


@dataclasses.dataclass(frozen=True)
class WorkerAccount:
    """The OS account scoring workers run as, when it is not the host's own."""

    name: str
    uid: int
    gid: int


def import_problem(account: WorkerAccount, python: str | None = None,
                   runtime_path: str | None = None, module: str = WORKER_MODULE) -> str | None:
    """Why a process of `account` cannot import the scoring worker (`module`) as a worker
    starts (`python -I`; `python` with the worker runtime at `runtime_path` first on its
    path, or this interpreter with the host's sys.path), or None where it can: one trial
    start. Folder modes alone cannot tell, since the project and its packages may sit below
    a folder private to the host's user (a checkout in a `mktemp -d` folder is mode 700)."""
    if python is None:
        paths = [os.path.abspath(entry) for entry in sys.path]
        code = f"import sys\nsys.path[:] = {paths!r}\nimport {module}\n"
    else:
        code = f"import sys\nsys.path[:0] = [{runtime_path or ''!r}]\nimport {module}\n"
    try:
        with leftover_processes.starting():
            trial = subprocess.Popen(
                [python or sys.executable, "-I", "-c", code], env={"PATH": os.defpath},
                cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, user=account.uid, group=account.gid, extra_groups=[])
            leftover_processes.live(trial.pid)
        try:
            _, errors = trial.communicate(timeout=IMPORT_TRIAL_SECONDS)
        except subprocess.TimeoutExpired:
            trial.kill()
            _, errors = trial.communicate()
        finally:
            leftover_processes.waited(trial.pid)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"user {account.name!r} cannot start a scoring worker: {exc}"
    if trial.returncode == 0:
        return None
    lines = errors.decode(errors="replace").strip().splitlines()
    return (f"user {account.name!r} cannot import the scoring worker: "
            f"{lines[-1] if lines else f'exit code {trial.returncode}'}")


def unreachable(path: Path, account: WorkerAccount, run: bool = False) -> str | None:
    """Why `account` cannot pass through every folder above `path` and `path` itself, read
    it if it is a file (`run`: run it), or None where it can. Of a path that does not
    exist yet, the folders that do are checked."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    for item in (*reversed(path.parents), path):
        info = item.stat()
        shift = 6 if info.st_uid == account.uid else 3 if info.st_gid == account.gid else 0
        needed = 0o1 if stat.S_ISDIR(info.st_mode) or run else 0o4
        if not (info.st_mode >> shift) & needed:
            return (f"user {account.name!r} cannot reach {path} "
                    f"({item} is mode {stat.S_IMODE(info.st_mode):o})")
    return None


def worker_environment(host: Mapping[str, str], batchfn: Mapping[str, str],
                       deployment: Mapping[str, str], account: WorkerAccount | None,
                       home: str | None) -> dict[str, str]:
    """A worker's whole environment: allowed host variables, the deployment's own
    environment_variables, then `batchfn`'s, which no deployment overrides (the contract
    refuses them at create too).

    A worker under another `account` gets that account's name and `home` instead of the
    host's. Variables the host was started with for math-library threads are kept.
    """
    environment = {name: value for name, value in host.items()
                   if name in ALLOWED_VARIABLES or name.startswith(ALLOWED_PREFIXES)
                   or (name in PROXY_VARIABLES and not _has_credentials(value))
                   or (account is None and name in ACCOUNT_VARIABLES)}
    if account is not None:
        environment.update(USER=account.name, LOGNAME=account.name)
        if home is not None:
            environment["HOME"] = home
    environment.update(deployment)
    for name, value in batchfn.items():
        if name in CPU_THREAD_VARIABLES and name in host:
            environment[name] = host[name]  # the host was started with it: kept
        else:
            environment[name] = value  # never the deployment's: batchfn sets it
    return environment


def _has_credentials(url: str) -> bool:
    try:
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    except ValueError:
        return True  # unreadable: assume the worst
    return parsed.username is not None or parsed.password is not None


_protected = False
_protect_lock = threading.Lock()


def protect_host() -> bool:
    """Make this process non-dumpable (Linux); True once it is.

    Then /proc/<pid>/environ, /proc/<pid>/mem and ptrace of the host need CAP_SYS_PTRACE:
    a worker of the same account can read neither the environment the host was started
    with nor its memory. Core dumps of the host stop too, and debuggers and profilers
    (py-spy) attach only as root.
    """
    global _protected
    with _protect_lock:
        if _protected or not sys.platform.startswith("linux"):
            return _protected
        problem = leftover_processes.prctl(PR_SET_DUMPABLE, 0)
        if problem:
            log.warning("could not make the host process non-dumpable: %s", problem)
            return False
        _protected = True
        return True


class WorkerProcess:
    """A started worker process, with the calls the pool makes of a multiprocessing one."""

    def __init__(self, popen: subprocess.Popen[bytes], account: WorkerAccount | None) -> None:
        self._popen = popen
        self._account = account

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        """The exit status (negative: the signal that ended it); None while it runs."""
        return self._done(self._popen.poll())

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        """End the worker's slot: kill the worker, its process group (it leads one: see
        start_worker) and, under an account of its own, every process it left behind."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()
        if self._account is not None:
            leftover_processes.ended(self._popen.pid)
            leftover_processes.end_leftovers(self._account.uid)

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._done(self._popen.wait(timeout))

    def _done(self, status: int | None) -> int | None:
        if status is not None:
            leftover_processes.waited(self._popen.pid)
        return status


def start_worker(arguments: tuple[Any, ...], environment: Mapping[str, str],
                 account: WorkerAccount | None, python: str | None = None,
                 runtime_path: str | None = None) -> tuple[WorkerProcess, Connection]:
    """Start `python -I -c BOOTSTRAP` with `environment` (and nothing else of the host's)
    under `account`, in a session and process group of its own, and send it where to import
    from and `arguments` (serve.main's); returns the process and the host's end of its pipe.

    `python` is a deployment environment's interpreter, which imports the worker runtime
    from `runtime_path`; None: the host's interpreter, with the host's sys.path."""
    protect_host()
    host_end, worker_end = Pipe()
    identity: dict[str, Any] = {}
    if account is not None:
        # umask 077: what it writes (in /tmp, say) no other deployment's user can read.
        identity = {"user": account.uid, "group": account.gid, "extra_groups": [],
                    "umask": 0o077}
        leftover_processes.become_subreaper()  # what escapes the worker's tree comes here
    try:
        with leftover_processes.starting():
            popen = subprocess.Popen(
                [python or sys.executable, "-I", "-c", BOOTSTRAP, str(worker_end.fileno())],
                env=dict(environment), cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, close_fds=True,
                pass_fds=(worker_end.fileno(),), start_new_session=True, **identity)
            leftover_processes.live(popen.pid)
    except BaseException:
        host_end.close()
        raise
    finally:
        worker_end.close()  # so the host sees EOF when the worker dies
    assert popen.stdout is not None
    threading.Thread(target=relay_output, args=(popen.stdout, popen.pid),
                     name="batchfn-worker-output", daemon=True).start()
    paths = ([runtime_path or ""], False) if python else (
        [os.path.abspath(entry) for entry in sys.path], True)
    try:
        host_end.send(paths)
        host_end.send(arguments)
    except OSError:
        pass  # it died at once: the pool reads the EOF and reports its exit code
    return WorkerProcess(popen, account), host_end


def relay_output(stream: IO[bytes], pid: int, *, lines_per_minute: int = WORKER_LINES_PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """Log what a worker writes to its stdout and stderr (`stream`) until it closes: one
    host log line per line, `worker <pid>: ` first, control characters escaped, at most
    MAX_WORKER_LINE_BYTES of it, at most `lines_per_minute` lines a minute (the rest is
    read and counted, never blocking the worker)."""
    window_start, logged, dropped = clock(), 0, 0
    cut = False  # the rest of a line that was too long is being skipped
    with stream:
        for chunk in iter(lambda: stream.readline(MAX_WORKER_LINE_BYTES), b""):
            complete = chunk.endswith(b"\n")
            if cut:
                cut = not complete
                continue
            cut = not complete
            now = clock()
            if now - window_start >= 60.0:
                _log_dropped(pid, dropped, lines_per_minute)
                window_start, logged, dropped = now, 0, 0
            if logged >= lines_per_minute:
                dropped += 1
                continue
            logged += 1
            text = _UNPRINTABLE.sub(_escaped, chunk.decode("utf-8", "replace").removesuffix("\n"))
            log.info("worker %d: %s%s", pid, text, " [line cut]" if cut else "")
    _log_dropped(pid, dropped, lines_per_minute)


def _log_dropped(pid: int, dropped: int, lines_per_minute: int) -> None:
    if dropped:
        log.warning("worker %d: %d more lines of its output were not logged (at most %d a "
                    "minute)", pid, dropped, lines_per_minute)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class _MessageUnpickler(pickle.Unpickler):
    """Builds only the classes a worker may send; anything else is refused unbuilt."""

    def __init__(self, data: bytes, allowed: tuple[type, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = {(cls.__module__, cls.__qualname__): cls for cls in allowed}

    def find_class(self, module: str, name: str) -> type:
        found = self.allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"a worker may not send {module}.{name}")
        return found


class WorkerMessageTooLarge(pickle.UnpicklingError):
    """A worker sent a message longer than the host reads; the pipe is unusable after it."""


def receive(conn: Connection, messages: tuple[type, ...], contents: tuple[type, ...] = (),
            *, max_bytes: int) -> Any:
    """The next message a worker sent on `conn`: an instance of one of the `messages`
    dataclasses whose fields hold plain values (numbers, text, bytes, None), instances of
    `contents` whose fields are plain, or tuples of either. Raises EOFError/OSError at the
    pipe's end, WorkerMessageTooLarge for a message of more than `max_bytes` (its length
    comes first on the pipe: the rest is never read) and UnpicklingError for anything else,
    which is never built.
    """
    try:
        data = conn.recv_bytes(max_bytes)
    except OSError:
        if conn.closed or not conn.readable:  # what recv_bytes does after a long message
            raise WorkerMessageTooLarge(
                f"a worker sent a message of more than {max_bytes:,} bytes") from None
        raise
    message = _MessageUnpickler(data, messages + contents).load()
    if not isinstance(message, messages) or not all(
            _plain(getattr(message, field.name), contents)
            for field in dataclasses.fields(message)):
        raise pickle.UnpicklingError(f"a worker sent a malformed {type(message).__name__}")
    return message


def _plain(value: Any, contents: tuple[type, ...]) -> bool:
    if isinstance(value, tuple):
        return all(_flat(item, contents) for item in value)
    return _flat(value, contents)


def _flat(value: Any, contents: tuple[type, ...]) -> bool:
    """A plain value, or an instance of `contents` whose fields are plain values."""
    if isinstance(value, contents):
        return all(isinstance(getattr(value, field.name), PLAIN_TYPES)
                   for field in dataclasses.fields(value))
    return isinstance(value, PLAIN_TYPES)


def prepare_worker_folder(path: Path, account: WorkerAccount | None) -> Path:
    """Create `path` (and its parents) for workers to write in: owned by `account`, 0700."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
        os.chmod(path, 0o700, follow_symlinks=False)
    return path


def worker_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Each regular file under `root` (relative POSIX path, its lstat) that a worker may
    have written, without following links; links and hard-linked files are left out."""
    for folder, _, names, folder_fd in os.fwalk(root):
        relative = os.path.relpath(folder, root)
        for name in names:
            try:
                info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                path = name if relative == "." else f"{relative}/{name}"
                yield path.replace(os.sep, "/"), info


def open_worker_file(root: Path, relative: str) -> BinaryIO:
    """Open `root`/`relative` for reading without following a link anywhere below `root`.

    Raises UnsafeWorkerFile where a part of the path is a link, or the file is not a
    regular file or has other hard links (a link to a file the host may read and the
    worker may not), FileNotFoundError where it is gone.
    """
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeWorkerFile(f"not a path inside the worker's folder: {relative!r}")
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, nofollow | os.O_DIRECTORY, dir_fd=folder)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeWorkerFile(f"{relative}: {part} is not a folder") from None
                raise
            os.close(folder)
            folder = inner
        try:
            fd = os.open(parts[-1], nofollow | os.O_NONBLOCK, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeWorkerFile(f"{relative} is a link") from None
            raise
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UnsafeWorkerFile(f"{relative} is not a file of its own")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
