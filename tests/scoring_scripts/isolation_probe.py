"""Deployment A of the isolation test: looks for deployment B's secrets, and leaves
processes behind.

run() on an input named `exit...` ends the worker process at once (its slot ends). On
any other input it waits until a worker of another deployment's user runs, then tries to
read that process's environment, working folder and memory map and to signal it; it reads
every file it can under PROBE_ROOTS (os.pathsep-separated; /tmp and /dev/shm are read one
level deep), lists and reads PROBE_PATHS (B's folders, named by the test) and every
process's /proc environ, looking for PROBE_NEEDLE_REVERSED reversed; and it starts three
processes marked with PROBE_MARKER: a child, a child in a session of its own, and a daemon
(double fork, setsid, SIGTERM and SIGHUP ignored). It returns one JSON report.
"""

import json
import os
import pwd
import subprocess
import sys
import time

READ_LIMIT = 64 * 1024
FILES_LIMIT = 20000
WAIT_SECONDS = 60
DAEMON = (
    "import os, signal, sys, time\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "os.setsid()\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
    "time.sleep(600)\n"
)
SLEEPER = "import time; time.sleep(600)"


def init():
    pass


def run(mini_batch):
    if any(os.path.basename(path).startswith("exit") for path in mini_batch):
        os._exit(3)
    report = {"user": pwd.getpwuid(os.getuid()).pw_name, "uid": os.getuid(),
              "umask": _umask(), "home": os.environ.get("HOME"),
              "tmpdir": os.environ.get("TMPDIR")}
    report.update(_processes())
    report.update(_files())
    report["started"] = _leave_processes(os.environ["PROBE_MARKER"])
    return [json.dumps(report, sort_keys=True)]


def _needle():
    # Given reversed, so that this worker's own environment does not hold it.
    return os.environ["PROBE_NEEDLE_REVERSED"][::-1].encode()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _owner(pid):
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        return uid, pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return None, None


def _processes():
    """Wait for a worker of another deployment's user, then try to reach it."""
    needle = _needle().decode()
    deadline = time.monotonic() + WAIT_SECONDS
    others = []
    while not others and time.monotonic() < deadline:
        others = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                  and _owner(pid)[0] not in (None, os.getuid())
                  and (_owner(pid)[1] or "").startswith("bfd-")]
        time.sleep(0.2)
    reached = {"environ": [], "cwd": [], "maps": [], "signal": []}
    for pid in others:
        for name in ("environ", "maps"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as file:
                    file.read(1)
                reached[name].append(pid)
            except OSError:
                pass
        try:
            os.readlink(f"/proc/{pid}/cwd")
            reached["cwd"].append(pid)
        except OSError:
            pass
        try:
            os.kill(pid, 0)
            reached["signal"].append(pid)
        except OSError:
            pass
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as file:
                    if needle.encode() in file.read():
                        found.append(f"/proc/{pid}/environ")
            except OSError:
                pass
    return {"other_workers": [{"pid": pid, "user": _owner(pid)[1]} for pid in others],
            "reached": reached, "needle_in_environ": found}


def _files():
    needle = _needle()
    report = {"files_read": 0, "needle_in_files": [], "paths_reached": []}

    def look(path):
        if report["files_read"] >= FILES_LIMIT:
            return
        try:
            with open(path, "rb") as file:
                data = file.read(READ_LIMIT)
        except OSError:
            return
        report["files_read"] += 1
        if needle in data:
            report["needle_in_files"].append(path)

    for root in os.environ["PROBE_ROOTS"].split(os.pathsep):
        if root in ("/tmp", "/dev/shm"):
            try:
                names = os.listdir(root)
            except OSError:
                continue
            for name in names:
                look(os.path.join(root, name))
            continue
        for folder, _, names in os.walk(root):
            for name in names:
                look(os.path.join(folder, name))
    for path in os.environ["PROBE_PATHS"].split(os.pathsep):
        try:
            names = os.listdir(path)
            report["paths_reached"].append(path)
        except OSError:
            continue
        for name in names:
            look(os.path.join(path, name))
    return report


def _leave_processes(marker):
    started = []
    for command, session in (([sys.executable, "-c", SLEEPER, marker], False),
                             ([sys.executable, "-c", SLEEPER, marker], True),
                             ([sys.executable, "-c", DAEMON, marker], True)):
        child = subprocess.Popen(command, start_new_session=session,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        started.append(child.pid)
    return started
