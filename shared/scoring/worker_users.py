"""Which OS user each deployment's scoring workers run as on this host.

Where the host runs as root (the Functions images run their host as root), every
deployment's workers run as a system user of their own, `bfd-<12 hex digits of
sha256("<endpoint>/<deployment>")>`, created on first use (`useradd --system`, no home,
no login shell, its own group) and reused from then on by every host process and every
later start. One user per deployment rather than a pool of users handed out in turn:
a user never passes from one deployment to another, so nothing a deployment leaves behind
(a file in /tmp or /dev/shm, a process) can ever be reached by another, every process of
that user is that deployment's (which is how leftovers are found and killed:
leftover_processes.py), and host processes and replicas need no coordination to agree on
it. The cost is one passwd entry per deployment a host has ever scored (system uids:
about 900 on Debian), on a host whose filesystem is a container's.

A deployment's user must be able to run the worker: its interpreter, the standard library,
the packages and the worker runtime it imports, the work folders. Where it cannot (a
checkout or interpreter below a folder private to root), or where the user cannot be
made, the host refuses to score that deployment with a message saying why: scoring code
never runs as root. `BATCHFN_ALLOW_ROOT_WORKERS=1` (development only) runs such workers
as root instead, with a warning. A host that does not run as root cannot switch users at
all: its workers run as its own user (a developer's machine; see docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from shared.scoring import leftover_processes
from shared.scoring.isolation import (
    WorkerAccount,
    WorkerAccountError,
    import_problem,
    unreachable,
)

log = logging.getLogger("batchfn.scoring")

ALLOW_ROOT_SETTING = "BATCHFN_ALLOW_ROOT_WORKERS"
USER_PREFIX = "bfd-"
COMMENT_PREFIX = "batchfn deployment "
USERADD_SECONDS = 60
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
# An account no file belongs to, neither by user nor by group: "other" permissions apply,
# as they do to a deployment's user before it exists.
ANYONE = WorkerAccount("a deployment's own user", -1, -1)


def deployment_user_name(endpoint: str, deployment: str) -> str:
    """The OS user name of a deployment's workers (the same on every host)."""
    digest = hashlib.sha256(f"{endpoint}/{deployment}".encode()).hexdigest()[:12]
    return f"{USER_PREFIX}{digest}"


class WorkerUsers:
    """The accounts deployments' workers run as on this host; thread-safe.

    `per_deployment`: each deployment gets a user of its own (a host running as root);
    otherwise workers run as the host's own user. `allow_root`: where a deployment's user
    cannot run its workers, run them as root instead of refusing (development only).
    """

    def __init__(self, *, per_deployment: bool, allow_root: bool = False) -> None:
        self.per_deployment = per_deployment
        self.allow_root = allow_root
        self._accounts: dict[tuple[str, ...], WorkerAccount | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> WorkerUsers:
        """Per-deployment users where this host runs as root; BATCHFN_ALLOW_ROOT_WORKERS=1
        lets workers that cannot run as those users run as root."""
        env = os.environ if environ is None else environ
        text = env.get(ALLOW_ROOT_SETTING, "").strip()
        if text not in ("", "0", "1"):
            raise ValueError(f"{ALLOW_ROOT_SETTING} must be 0 or 1, not {text!r}")
        return cls(per_deployment=os.geteuid() == 0, allow_root=text == "1")

    def account(self, endpoint: str, deployment: str, *, python: str | None,
                runtime_path: str | None, folders: Sequence[Path]) -> WorkerAccount | None:
        """The account `deployment`'s workers run as (None: the host's own), once its user
        exists and can start a worker with `python` (None: the host's interpreter) that
        imports the worker runtime from `runtime_path` and reaches `folders`.

        Raises WorkerAccountError where it cannot and root is not allowed.
        """
        if not self.per_deployment:
            return None
        key = (endpoint, deployment, python or "", runtime_path or "")
        with self._lock:
            if key in self._accounts:
                return self._accounts[key]
            try:
                account = self._prepare(endpoint, deployment, python, runtime_path, folders)
            except WorkerAccountError as exc:
                if not self.allow_root:
                    raise WorkerAccountError(
                        f"{exc}. Scoring code does not run as root: make the interpreter, its "
                        f"packages and {folders[0] if folders else 'the work folder'} "
                        f"readable by other users, or set {ALLOW_ROOT_SETTING}=1 to run "
                        "such workers as root (development only)") from None
                log.warning("deployment %s/%s: its workers run as root (%s=1): %s",
                            endpoint, deployment, ALLOW_ROOT_SETTING, exc)
                account = None
            self._accounts[key] = account
            return account

    def _prepare(self, endpoint: str, deployment: str, python: str | None,
                 runtime_path: str | None, folders: Sequence[Path]) -> WorkerAccount:
        interpreter = Path(python) if python else None
        problem = reach_problem(interpreter, runtime_path, folders)
        if problem:
            raise WorkerAccountError(problem)
        account = ensure_user(endpoint, deployment)
        leftover_processes.end_leftovers(account.uid)  # a host that died left them
        problem = import_problem(account, python, runtime_path)
        if problem:
            raise WorkerAccountError(problem)
        return account


def reach_problem(python: Path | None, runtime_path: str | None,
                   folders: Sequence[Path]) -> str | None:
    """Why a user of its own could not run a worker here, judged by file modes alone (the
    trial start judges the rest), or None."""
    checks = [(python or Path(sys.executable), True)]
    if python is None:
        checks.append((Path(os.__file__).parent, False))  # the standard library
    if runtime_path:
        checks.append((Path(runtime_path), False))
    checks += [(folder, False) for folder in folders]
    for path, run in checks:
        problem = unreachable(path, ANYONE, run=run)
        if problem:
            return problem
    return None


def ensure_user(endpoint: str, deployment: str) -> WorkerAccount:
    """The deployment's system user, created if it does not exist (WorkerAccountError
    where it cannot be, or where a user of that name is not batchfn's)."""
    name = deployment_user_name(endpoint, deployment)
    comment = COMMENT_PREFIX + re.sub(r"[^A-Za-z0-9._/-]", "_", f"{endpoint}/{deployment}")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = _create_user(name, comment)
    if entry.pw_gecos != comment or entry.pw_uid == 0 or entry.pw_gid == 0:
        raise WorkerAccountError(f"user {name!r} exists on this host and is not the workers' "
                                 f"user of deployment {endpoint}/{deployment}")
    return WorkerAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_user(name: str, comment: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise WorkerAccountError(f"cannot create user {name!r} for a deployment's workers: "
                                 "useradd is not installed on this host")
    shell = next((path for path in NOLOGIN_SHELLS if os.path.exists(path)), "/bin/false")
    try:
        done = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", shell, "--comment", comment, name],
            capture_output=True, text=True, timeout=USERADD_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise WorkerAccountError(f"cannot create user {name!r}: {exc}") from None
    try:
        entry = pwd.getpwnam(name)  # made by another host process meanwhile, or by us
    except KeyError:
        message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise WorkerAccountError(f"cannot create user {name!r}: {message}") from None
    log.info("created user %s (uid %d) for the workers of %s", name, entry.pw_uid,
             comment.removeprefix(COMMENT_PREFIX))
    return entry
