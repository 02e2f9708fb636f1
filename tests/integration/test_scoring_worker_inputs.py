"""Worker processes download their own inputs (real Azurite): results and failure semantics."""

from __future__ import annotations

import base64
import errno
import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError

from shared.layout import DATA_CONTAINER
from shared.scoring import pool as pool_module
from shared.scoring.batch import FAILED, SUCCEEDED, InputFile
from shared.scoring.pool import InputsUnavailable, WorkerPool
from shared.scoring.worker import WorkerSpec
from shared.storage import StorageAccount

SCRIPTS = Path(__file__).resolve().parents[1] / "scoring_scripts"


@pytest.fixture(scope="module")
def account(storage_connection: str) -> StorageAccount:
    account = StorageAccount(connection_string=storage_connection)
    try:
        account.container(DATA_CONTAINER).create_container()
    except ResourceExistsError:
        pass
    return account


@pytest.fixture(scope="module")
def inputs(account: StorageAccount) -> tuple[InputFile, ...]:
    folder = f"worker-inputs/{uuid.uuid4().hex[:8]}"
    container = account.container(DATA_CONTAINER)
    files = []
    for name, data in {"a.txt": b"a", "b.txt": b"bbb"}.items():
        container.upload_blob(f"{folder}/{name}", data)
        files.append(InputFile(DATA_CONTAINER, f"{folder}/{name}", name))
    return tuple(files)


def make_pool(account: StorageAccount, tmp_path: Path) -> WorkerPool:
    script = SCRIPTS / "list_return.py"
    spec = WorkerSpec(script_path=str(script), code_dir=str(script.parent),
                      model_dir=str(tmp_path), storage=account)
    return WorkerPool(spec, 1, scratch_dir=tmp_path / "logs")


def paths_in(folder: Path, files: tuple[InputFile, ...]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [str(folder / file.display_name) for file in files]


def test_the_worker_downloads_the_inputs_before_run(account, inputs, tmp_path):
    pool = make_pool(account, tmp_path)
    try:
        first = pool.run(paths_in(tmp_path / "one", inputs), 30, str(tmp_path), inputs)
        second = pool.run(paths_in(tmp_path / "two", inputs), 30, str(tmp_path), inputs)
    finally:
        pool.close()
    for result in (first, second):
        assert result.status == SUCCEEDED
        assert result.value == ["a.txt 1", "b.txt 3"]
        assert result.downloaded_at is not None
    assert (tmp_path / "two" / "b.txt").read_bytes() == b"bbb"


def test_a_missing_blob_fails_the_attempt_and_the_worker_keeps_serving(account, inputs,
                                                                        tmp_path):
    gone = InputFile(DATA_CONTAINER, "worker-inputs/nowhere/gone.txt", "gone.txt")
    pool = make_pool(account, tmp_path)
    try:
        missing = pool.run(paths_in(tmp_path / "one", (*inputs, gone)), 30, str(tmp_path),
                           (*inputs, gone))
        after = pool.run(paths_in(tmp_path / "two", inputs), 30, str(tmp_path), inputs)
    finally:
        pool.close()
    assert missing.status == FAILED
    assert missing.error.startswith("input file not found: gone.txt (")
    assert after.status == SUCCEEDED


def test_a_storage_error_raises_so_the_message_is_retried(account, inputs, tmp_path):
    wrong_key = base64.b64encode(b"not the account key").decode()
    bad = replace(account, connection_string=re.sub(
        r"AccountKey=[^;]+", f"AccountKey={wrong_key}", account.connection_string))
    pool = make_pool(bad, tmp_path)
    try:
        with pytest.raises(InputsUnavailable):
            pool.run(paths_in(tmp_path / "one", inputs), 30, str(tmp_path), inputs)
    finally:
        pool.close()


def test_a_local_write_error_raises_with_its_errno(account, inputs, tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be")
    pool = make_pool(account, tmp_path)
    try:
        with pytest.raises(OSError) as raised:
            pool.run([str(tmp_path / "taken" / f.display_name) for f in inputs], 30,
                     str(tmp_path), inputs)
        after = pool.run(paths_in(tmp_path / "two", inputs), 30, str(tmp_path), inputs)
    finally:
        pool.close()
    assert raised.value.errno == errno.ENOTDIR
    assert after.status == SUCCEEDED


def test_downloads_over_their_limit_raise_and_the_next_batch_gets_a_fresh_worker(
        account, inputs, tmp_path, monkeypatch):
    pool = make_pool(account, tmp_path)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(pool_module, "download_limit", lambda files: 0.001)
            with pytest.raises(InputsUnavailable, match="input download timed out"):
                pool.run(paths_in(tmp_path / "one", inputs), 30, str(tmp_path), inputs)
        after = pool.run(paths_in(tmp_path / "two", inputs), 30, str(tmp_path), inputs)
    finally:
        pool.close()
    assert after.status == SUCCEEDED


def test_the_download_limit_grows_with_the_files():
    assert pool_module.download_limit(0) == 60
    assert pool_module.download_limit(100) == 70
