"""What keeps the host's secrets from scoring scripts (shared/scoring/isolation.py), piece by
piece: the environment allow-list, the trial start of a worker account, the pickle loader
of their messages, the link-proof reads of the files they write, the non-dumpable host."""

from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import time
from multiprocessing.connection import Pipe
from pathlib import Path

import pytest

from shared.scoring.isolation import (
    MAX_WORKER_LINE_BYTES,
    WORKER_LINES_PER_MINUTE,
    UnsafeWorkerFile,
    WorkerAccount,
    WorkerMessageTooLarge,
    import_problem,
    open_worker_file,
    receive,
    relay_output,
    unreachable,
    worker_environment,
    worker_files,
)
from shared.scoring.pool import WorkerPool
from shared.worker.encoding import EncodedPart
from shared.worker.protocol import (
    MAX_ERROR_MESSAGE_CHARS,
    MAX_FILE_NAME_CHARS,
    MAX_LISTED_FAILURES,
    MAX_TRACEBACK_CHARS,
    Reply,
    Started,
    WorkerSpec,
    bounded,
)
from shared.worker.tabular.failures import MAX_ERROR_CHARS, FailedInput

SCRIPTS = Path(__file__).resolve().parents[1] / "scoring_scripts"
NOBODY = WorkerAccount("nobody", 65534, 65534)

# What a Functions host's environment holds, locally and in Azure.
HOST_SECRETS = {
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0",
    "AzureWebJobsStorage__accountName": "a",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000000",
    "IDENTITY_ENDPOINT": "http://localhost:42356/msi/token",
    "IDENTITY_HEADER": "secret-header",
    "MSI_ENDPOINT": "http://localhost:42356/msi/token",
    "MSI_SECRET": "secret-header",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k;IngestionEndpoint=x",
    "WEBSITE_AUTH_ENCRYPTION_KEY": "k",
    "CONTAINER_APP_REPLICA_NAME": "r",
    "AzureWebJobsSecretStorageType": "containerapp",
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "BATCHFN_WORK_DIR": "/tmp/batchfn-work",
    "HTTPS_PROXY": "http://user:password@proxy:3128",
}
HOST_PLAIN = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC",
              "PYTHONPATH": "/home/site/wwwroot", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
              "HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "localhost",
              "OMP_NUM_THREADS": "3", "HOME": "/root", "USER": "root"}


def test_a_worker_keeps_only_allowed_host_variables():
    batchfn = {"AZUREML_MODEL_DIR": "/m", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    environment = worker_environment({**HOST_SECRETS, **HOST_PLAIN}, batchfn, {}, NOBODY,
                                     "/work/home")
    assert not set(HOST_SECRETS) & set(environment)
    assert environment == {
        # No PYTHON* variable of the host's: workers start isolated (python -I).
        **{name: HOST_PLAIN[name] for name in ("PATH", "LANG", "LC_ALL", "TZ",
                                               "LD_LIBRARY_PATH", "HTTP_PROXY", "NO_PROXY")},
        "OMP_NUM_THREADS": "3",  # the host was started with it: kept
        "MKL_NUM_THREADS": "1", "AZUREML_MODEL_DIR": "/m",
        "HOME": "/work/home", "USER": "nobody", "LOGNAME": "nobody",
    }


def test_the_deployments_own_variables_win_even_secret_ones_but_not_reserved_ones():
    deployment = {"AzureWebJobsStorage": "set on purpose", "AZUREML_MODEL_DIR": "/other",
                  "CUDA_VISIBLE_DEVICES": "0,1,2,3", "OMP_NUM_THREADS": "64"}
    batchfn = {"AZUREML_MODEL_DIR": "/m", "CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "2"}
    environment = worker_environment(HOST_SECRETS, batchfn, deployment, None, None)
    assert environment == {"AzureWebJobsStorage": "set on purpose", **batchfn}


def test_the_hosts_own_account_keeps_its_home():
    environment = worker_environment(HOST_PLAIN, {}, {}, None, None)
    assert (environment["HOME"], environment["USER"]) == ("/root", "root")


def test_a_worker_started_by_a_pool_sees_no_host_secret(tmp_path, monkeypatch, part_rows):
    for name, value in HOST_SECRETS.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "input.txt").write_text("data")
    spec = WorkerSpec(script_path=str(SCRIPTS / "echo.py"), code_dir=str(SCRIPTS),
                      model_dir=str(tmp_path), environment={
                          "ECHO_ENV_COLUMNS": ",".join([*HOST_SECRETS, "AZUREML_MODEL_DIR"])})
    pool = WorkerPool(spec, 1, scratch_dir=tmp_path / "logs")
    try:
        result = pool.run([str(tmp_path / "input.txt")], 30, str(tmp_path),
                          output_format="jsonl")
    finally:
        pool.close()
    row = part_rows(result.part.data)[0]
    assert {name: row[name] for name in HOST_SECRETS} == dict.fromkeys(HOST_SECRETS, "")
    assert row["AZUREML_MODEL_DIR"] == str(tmp_path)


def test_unreachable_checks_every_folder_on_the_way(worker_tmp):
    folder = worker_tmp("reachable")
    private = folder / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    open_folder = folder / "open"
    open_folder.mkdir(mode=0o755)
    problem = unreachable(private / "inner" / "not-yet", NOBODY)
    assert problem and f"({private} is mode 700)" in problem
    assert unreachable(open_folder / "not-yet", NOBODY) is None
    assert unreachable(private, WorkerAccount("me", private.stat().st_uid, 0)) is None


def _sent(message: object, max_bytes: int = 1024 * 1024) -> object:
    host, worker = Pipe()
    worker.send_bytes(message if isinstance(message, bytes) else pickle.dumps(message))
    return receive(host, (Started, Reply), (EncodedPart, FailedInput), max_bytes=max_bytes)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_host_builds_only_the_pools_messages_from_a_worker():
    reply = Reply(3, True, rows=2, part=EncodedPart(b"a\nb\n", b"h\n"), missing=(1,),
                  failed=(FailedInput("a.csv", "bad row", 4), FailedInput("b.csv", "gone")),
                  failed_inputs=2)
    assert _sent(reply) == reply
    assert _sent(Started(4, error="x", errno=28)) == Started(4, error="x", errno=28)
    for hostile in (_RunsCode(), Reply(1, True, part=_RunsCode()), [reply], EncodedPart(b""),
                    Reply(1, True, missing=([1],)), Reply(1, True, error=Path("x")),
                    Reply(1, True, failed=(FailedInput("a", "e", row=[1]),)),
                    Reply(1, True, failed=((FailedInput("a", "e"),),))):
        with pytest.raises(pickle.UnpicklingError):
            _sent(hostile)


def test_a_message_longer_than_the_cap_is_refused_before_it_is_read():
    host, worker = Pipe()
    # The length comes first: a worker announcing a terabyte is refused at once, without
    # waiting for (or holding) any of it.
    worker._send(struct.pack("!i", -1) + struct.pack("!Q", 1 << 40))
    with pytest.raises(WorkerMessageTooLarge, match="more than 1,024 bytes"):
        receive(host, (Started, Reply), (EncodedPart, FailedInput), max_bytes=1024)
    with pytest.raises(WorkerMessageTooLarge):
        _sent(Reply(1, True, part=EncodedPart(b"x" * 4096)), max_bytes=1024)
    assert _sent(Reply(1, True, part=EncodedPart(b"x" * 512)), max_bytes=1024).ok


def test_the_host_bounds_texts_and_lists_a_worker_sends():
    huge = "x" * 20_000_000 + " the end"
    reply = bounded(Reply(1, False, error=huge, traceback="Traceback\n" + huge,
                          failed=tuple(FailedInput(f"f{i}" * 2000, huge, i)
                                       for i in range(MAX_LISTED_FAILURES + 5))))
    assert len(reply.error) <= MAX_ERROR_MESSAGE_CHARS and reply.error.endswith("the end")
    assert "characters cut" in reply.error
    assert len(reply.traceback) <= MAX_TRACEBACK_CHARS
    assert reply.traceback.startswith("Traceback") and reply.traceback.endswith("the end")
    assert len(reply.failed) == MAX_LISTED_FAILURES
    assert all(len(f.error) <= MAX_ERROR_CHARS and len(f.file) <= MAX_FILE_NAME_CHARS
               for f in reply.failed)
    started = bounded(Started(2, error=huge, missing=True))
    assert len(started.error) <= MAX_ERROR_MESSAGE_CHARS and started.missing
    small = Reply(3, True, rows=1, error="fine")
    assert bounded(small) is small


def test_a_workers_own_output_reaches_the_host_log_prefixed_and_bounded(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="batchfn.scoring")
    script = SCRIPTS / "chatty.py"
    pool = WorkerPool(WorkerSpec(script_path=str(script), code_dir=str(script.parent),
                                 model_dir=str(tmp_path)), 1, scratch_dir=tmp_path / "logs")
    (tmp_path / "in.txt").write_text("x")
    try:
        assert pool.run([str(tmp_path / "in.txt")], 30, str(tmp_path)).status == "succeeded"
        deadline = time.monotonic() + 30  # the first 200 lines, then a moment for the rest
        while time.monotonic() < deadline and caplog.text.count(": chatter ") < 198:
            time.sleep(0.1)
        time.sleep(1)
        pid = pool._slots[0].worker.process.pid
    finally:
        pool.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "more lines of its output" not in caplog.text:
        time.sleep(0.1)  # counted when the worker's output ends
    lines = [r.getMessage() for r in caplog.records if r.name == "batchfn.scoring"
             and r.getMessage().startswith("worker ")]
    relayed = [line for line in lines if "chatter" in line or "all is well" in line
               or "yyy" in line]
    assert relayed and all(line.startswith(f"worker {pid}: ") for line in relayed)
    assert all("\n" not in line and "\x1b" not in line and "\r" not in line
               and "\u2028" not in line for line in lines)
    forged = next(line for line in relayed if "all is well" in line)
    assert forged.startswith(f"worker {pid}: \\x1b[2K\\x0d2030-01-01") and "\\u2028" in forged
    long = next(line for line in relayed if "yyy" in line)
    assert long.endswith(" [line cut]") and len(long) < MAX_WORKER_LINE_BYTES + 100
    assert len(relayed) == WORKER_LINES_PER_MINUTE
    assert f"worker {pid}: 302 more lines of its output were not logged" in caplog.text


def test_relayed_output_is_rate_limited_per_minute(caplog):
    caplog.set_level(logging.INFO, logger="batchfn.scoring")
    times = iter([0, 1, 2, 3, 61, 62, 63, 64])
    relay_output(io.BytesIO(b"".join(b"line %d\n" % n for n in range(7))), 7,
                 lines_per_minute=2, clock=lambda: next(times))
    assert [r.getMessage() for r in caplog.records] == [
        "worker 7: line 0", "worker 7: line 1",
        "worker 7: 1 more lines of its output were not logged (at most 2 a minute)",
        "worker 7: line 3", "worker 7: line 4",
        "worker 7: 2 more lines of its output were not logged (at most 2 a minute)"]


def test_files_a_worker_wrote_are_read_without_following_links(tmp_path):
    secret = tmp_path / "host-secret.json"
    secret.write_text("the master key")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "result.txt").write_text("rows")
    (out / "key.json").symlink_to(secret)
    (out / "linked-folder").symlink_to(tmp_path)
    os.link(secret, out / "hard.json")
    os.mkfifo(out / "pipe")
    assert [name for name, _ in worker_files(out)] == ["sub/result.txt"]
    with open_worker_file(out, "sub/result.txt") as file:
        assert file.read() == b"rows"
    for relative in ("key.json", "linked-folder/host-secret.json", "hard.json", "pipe",
                     "../host-secret.json", "sub/../../host-secret.json"):
        with pytest.raises(UnsafeWorkerFile):
            open_worker_file(out, relative).close()
    with pytest.raises(FileNotFoundError):
        open_worker_file(out, "sub/gone.txt")


def test_a_protected_host_is_not_dumpable():
    # Non-dumpable, its /proc/<pid>/environ and memory belong to root and need
    # CAP_SYS_PTRACE: a worker of the same user cannot read them (root can, which is why
    # a root host runs its workers as another user).
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    code = ("import ctypes, os\n"
            "from shared.scoring.isolation import protect_host\n"
            "assert protect_host()\n"
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), os.stat('/proc/self/environ').st_uid)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert run.stdout.split() == ["0", "0"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a trial start as another user needs root")
def test_the_account_must_import_the_worker_not_just_reach_folders():
    root = WorkerAccount("root", 0, 0)
    assert import_problem(root) is None
    # Where the account cannot load the project's packages (below a folder it cannot pass,
    # say), the trial fails, with Python's own message.
    problem = import_problem(root, module="shared.scoring.no_such_module")
    assert problem and "cannot import the scoring worker" in problem
    assert "ModuleNotFoundError" in problem
