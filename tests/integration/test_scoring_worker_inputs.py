"""Worker processes download their own inputs from signed URLs (real Azurite): results,
overlap with the previous run(), and failure semantics."""

from __future__ import annotations

import base64
import errno
import os
import re
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from shared.contract.errors import StorageUnavailable
from shared.contract.layout import DATA_CONTAINER
from shared.contract.manifest import InputFile
from shared.scoring import pool as pool_module
from shared.scoring.batch import FAILED, SUCCEEDED
from shared.scoring.grants import ReadGrants
from shared.scoring.pool import WorkerPool
from shared.storage.account import StorageAccount
from shared.worker.protocol import InputDownload, WorkerSpec

SCRIPTS = Path(__file__).resolve().parents[1] / "scoring_scripts"


@pytest.fixture(scope="module")
def inputs(account: StorageAccount) -> tuple[InputFile, ...]:
    folder = f"worker-inputs/{uuid.uuid4().hex[:8]}"
    container = account.container(DATA_CONTAINER)
    files = []
    for name, data in {"a.txt": b"a", "b.txt": b"bbb"}.items():
        container.upload_blob(f"{folder}/{name}", data)
        files.append(InputFile(DATA_CONTAINER, f"{folder}/{name}", name))
    return tuple(files)


def make_pool(tmp_path: Path, script: str = "list_return.py", **env: str) -> WorkerPool:
    path = SCRIPTS / script
    spec = WorkerSpec(script_path=str(path), code_dir=str(path.parent),
                      model_dir=str(tmp_path), environment=env)
    return WorkerPool(spec, 1, scratch_dir=tmp_path / "logs")


def signed(account: StorageAccount, files: Sequence[InputFile]):  # noqa: ANN201
    """The `downloads` argument of WorkerPool.run: fresh read URLs of `files`."""
    grants = ReadGrants(account.blob_service())

    def downloads() -> list[InputDownload]:
        urls = grants.urls(files, timedelta(minutes=5))
        return [InputDownload(url, f.display_name) for url, f in zip(urls, files, strict=True)]

    return downloads


def paths_in(folder: Path, files: tuple[InputFile, ...]) -> list[str]:
    return [str(folder / file.display_name) for file in files]


def run(pool: WorkerPool, account: StorageAccount, folder: Path, files, **kw):  # noqa: ANN201
    return pool.run(paths_in(folder, files), kw.pop("timeout", 30), str(folder.parent),
                    downloads=signed(account, files), output_format="azureml", **kw)


def test_the_worker_downloads_the_inputs_before_run(account, inputs, tmp_path):
    pool = make_pool(tmp_path)
    try:
        first = run(pool, account, tmp_path / "one", inputs)
        second = run(pool, account, tmp_path / "two", inputs, scratch=str(tmp_path / "two"))
    finally:
        pool.close()
    for result in (first, second):
        assert result.status == SUCCEEDED
        assert result.part.data == b"a.txt 1\nb.txt 3\n"
        assert result.downloaded_at is not None
    assert (tmp_path / "one" / "b.txt").read_bytes() == b"bbb"
    assert not (tmp_path / "two").exists()  # the worker removes the scratch folder after run()


def test_the_next_mini_batch_downloads_while_run_works(account, inputs, tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    pool = make_pool(tmp_path, "echo.py", ECHO_SLEEP="1", ECHO_RECORD_DIR=str(record))
    try:
        with ThreadPoolExecutor(2) as threads:
            first = threads.submit(run, pool, account, tmp_path / "one", inputs)
            time.sleep(0.3)  # the first one is running
            second = threads.submit(run, pool, account, tmp_path / "two", inputs)
            while not (tmp_path / "two" / "b.txt").exists():
                time.sleep(0.02)
            arrived = time.time()
            results = [first.result(), second.result()]
    finally:
        pool.close()
    assert [r.status for r in results] == [SUCCEEDED, SUCCEEDED]
    runs = [line.split() for line in (record / "runs.log").read_text().splitlines()]
    first_end, second_start = float(runs[1][2]), float(runs[2][2])
    assert [kind for kind, *_ in runs] == ["start", "end", "start", "end"]
    assert arrived < first_end <= second_start  # downloaded before the first run() ended
    assert results[1].downloaded_at >= results[0].downloaded_at


def test_a_prefetched_mini_batch_survives_the_death_of_the_worker_before_it(account, inputs,
                                                                           tmp_path):
    pool = make_pool(tmp_path, "kills_itself.py", KILL_WHEN_NAME_CONTAINS="die")
    doomed_files = upload(account, {"die.txt": b"d"})
    try:
        with ThreadPoolExecutor(2) as threads:
            doomed = threads.submit(run, pool, account, tmp_path / "one", doomed_files)
            after = threads.submit(run, pool, account, tmp_path / "two", inputs)
            results = [doomed.result(), after.result()]
    finally:
        pool.close()
    assert (results[0].status, results[0].error) == (FAILED, "worker process exited with code -9")
    assert results[1].status == SUCCEEDED  # sent again to a fresh worker: not an attempt
    assert [line.split()[:2] for line in results[1].part.data.decode().splitlines()] == [
        ["a.txt", "1"], ["b.txt", "3"]]


def test_a_missing_blob_fails_the_attempt_and_the_worker_keeps_serving(account, inputs,
                                                                        tmp_path):
    gone = InputFile(DATA_CONTAINER, "worker-inputs/nowhere/gone.txt", "gone.txt")
    pool = make_pool(tmp_path)
    try:
        missing = run(pool, account, tmp_path / "one", (*inputs, gone))
        after = run(pool, account, tmp_path / "two", inputs)
    finally:
        pool.close()
    assert missing.status == FAILED
    assert missing.error == "input file not found: gone.txt"
    assert after.status == SUCCEEDED


def test_a_refused_grant_raises_so_the_message_is_retried_and_never_shows_the_url(
        account, inputs, tmp_path):
    wrong_key = base64.b64encode(b"not the account key").decode()
    bad = replace(account, connection_string=re.sub(
        r"AccountKey=[^;]+", f"AccountKey={wrong_key}", account.connection_string))
    pool = make_pool(tmp_path)
    try:
        with pytest.raises(StorageUnavailable) as raised:
            run(pool, bad, tmp_path / "one", inputs)
    finally:
        pool.close()
    assert "HTTP 403" in str(raised.value) and "a.txt" in str(raised.value)
    assert "sig=" not in str(raised.value) and "http" not in str(raised.value)


def test_a_local_write_error_raises_with_its_errno(account, inputs, tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be")
    pool = make_pool(tmp_path)
    try:
        with pytest.raises(OSError) as raised:
            run(pool, account, tmp_path / "taken", inputs)
        after = run(pool, account, tmp_path / "two", inputs)
    finally:
        pool.close()
    assert raised.value.errno in (errno.ENOTDIR, errno.EEXIST)
    assert after.status == SUCCEEDED


def test_downloads_over_their_limit_raise_and_the_next_batch_gets_a_fresh_worker(
        account, inputs, tmp_path, monkeypatch):
    pool = make_pool(tmp_path)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(pool_module, "download_limit", lambda files: 0.001)
            with pytest.raises(StorageUnavailable, match="input download timed out"):
                run(pool, account, tmp_path / "one", inputs)
        after = run(pool, account, tmp_path / "two", inputs)
    finally:
        pool.close()
    assert after.status == SUCCEEDED


def test_the_download_limit_grows_with_the_files():
    assert pool_module.download_limit(0) == 60
    assert pool_module.download_limit(100) == 70


def test_grants_sign_like_the_sdk_and_read_only_their_blob(account, inputs):
    grants = ReadGrants(account.blob_service())
    odd = upload(account, {"sub dir/ä+b%.txt": b"odd"})
    (url,) = grants.urls(odd, timedelta(minutes=5))
    assert grants._templates and all(t is not None for t in grants._templates.values())
    import urllib.error
    import urllib.request

    assert urllib.request.urlopen(url).read() == b"odd"
    other = url.replace("%C3%A4%2Bb%25.txt", "a.txt")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(other)
    assert refused.value.code == 403


def upload(account: StorageAccount, files: dict[str, bytes]) -> tuple[InputFile, ...]:
    folder = f"worker-inputs/{uuid.uuid4().hex[:8]}"
    container = account.container(DATA_CONTAINER)
    for name, data in files.items():
        container.upload_blob(f"{folder}/{name}", data)
    return tuple(InputFile(DATA_CONTAINER, f"{folder}/{name}", os.path.basename(name))
                 for name in files)
