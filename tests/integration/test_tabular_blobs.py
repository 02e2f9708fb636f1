"""Row ranges planned and read over real blobs (Azurite): by the account's client when
planning, by a read-only SAS URL when a worker reads, ETag-checked against changes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

from shared.contract.layout import DATA_CONTAINER
from shared.storage.account import StorageAccount
from shared.worker.input_errors import InputChanged
from shared.worker.tabular.read import BatchPiece, TableReader
from shared.worker.tabular.sources import BlobSource
from shared.worker.tabular.split import RowBatcher, plan_table

ROWS = 20_000


@pytest.fixture
def folder() -> str:
    return f"tabular/{uuid.uuid4().hex[:8]}"


def upload(account: StorageAccount, name: str, data: bytes) -> BlobClient:
    blob = account.blob_service().get_blob_client(DATA_CONTAINER, name)
    blob.upload_blob(data, overwrite=True)
    return blob


def read_url(blob: BlobClient) -> str:
    """A read-only SAS URL, what a worker is handed instead of a credential."""
    key = blob.credential.account_key
    token = generate_blob_sas(blob.account_name, blob.container_name, blob.blob_name,
                              account_key=key, permission=BlobSasPermissions(read=True),
                              expiry=datetime.now(UTC) + timedelta(minutes=10))
    return f"{blob.url}?{token}"


def csv_bytes() -> tuple[bytes, pd.DataFrame]:
    ids = np.arange(ROWS)
    frame = pd.DataFrame({"id": ids, "note": np.where(ids % 50 == 0, 'two\r\nlines, "q"', "x"),
                          "value": ids / 4})
    return frame.to_csv(index=False, lineterminator="\r\n").encode(), frame


def test_a_csv_blob_splits_and_reads_back_through_sas_urls(account, folder):
    data, frame = csv_bytes()
    blob = upload(account, f"{folder}/big.csv", data)

    planning = BlobSource.open(blob)
    plan = plan_table(planning, "csv", 1000, chunk_bytes=64 * 1024)

    assert plan.rows == ROWS and len(plan.ranges) == ROWS // 1000
    worker_source = BlobSource.from_url(read_url(blob), size=planning.size, etag=planning.etag)
    reader = TableReader()
    parts = [reader.read(BatchPiece("big.csv", worker_source, "csv", r)) for r in plan.ranges]
    assert not any(part.failed for part in parts)
    result = pd.concat([part.frame for part in parts], ignore_index=True)
    assert result["id"].tolist() == list(range(ROWS))
    assert (result["note"] == frame["note"]).all()


def test_jsonl_and_parquet_blobs_pack_into_mini_batches(account, folder):
    lines = b"".join(json.dumps({"id": i}).encode() + b"\n" for i in range(250))
    jsonl = upload(account, f"{folder}/a.jsonl", lines)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": list(range(250, 600))}), sink, row_group_size=64)
    parquet = upload(account, f"{folder}/b.parquet", sink.getvalue().to_pybytes())
    batcher: RowBatcher[tuple[str, BlobSource]] = RowBatcher(200)
    batches = []
    for blob, fmt in ((jsonl, "jsonl"), (parquet, "parquet")):
        source = BlobSource.open(blob)
        plan = plan_table(source, fmt, 200, first_range_rows=batcher.room)
        batches += batcher.add((fmt, source), plan.ranges)
    assert batcher.finish() is None  # 600 rows: three full mini-batches

    reader = TableReader()
    ids = []
    for batch in batches:
        pieces = [BatchPiece(p.file[1].name, p.file[1], p.file[0], p.range) for p in batch]
        ids += reader.read_batch(pieces).frame["id"].tolist()

    assert [[p.range.rows for p in batch] for batch in batches] == [[200], [50, 150], [200]]
    assert ids == list(range(600))


def test_a_blob_replaced_after_planning_fails_its_ranges(account, folder):
    data, _ = csv_bytes()
    blob = upload(account, f"{folder}/moving.csv", data)
    source = BlobSource.open(blob)
    plan = plan_table(source, "csv", 5000)
    blob.upload_blob(data.replace(b"two", b"TWO"), overwrite=True)

    result = TableReader().read(BatchPiece("moving.csv", source, "csv", plan.ranges[1]))

    assert len(result.frame) == 0
    assert [(f.row, f.rows) for f in result.failed] == [(5000, 5000)]
    assert "changed after its rows were planned" in result.failed[0].error


def test_a_missing_blob_cannot_be_opened(account, folder):
    blob = account.blob_service().get_blob_client(DATA_CONTAINER, f"{folder}/none.csv")
    with pytest.raises(InputChanged, match="does not exist"):
        BlobSource.open(blob)


def test_a_parquet_blob_replaced_after_planning_fails_its_ranges(account, folder):
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": list(range(100))}), sink, row_group_size=50)
    blob = upload(account, f"{folder}/moving.parquet", sink.getvalue().to_pybytes())
    source = BlobSource.open(blob)
    plan = plan_table(source, "parquet", 50)
    blob.upload_blob(sink.getvalue().to_pybytes(), overwrite=True)  # same bytes, new ETag

    result = TableReader().read(BatchPiece("moving.parquet", source, "parquet",
                                           plan.ranges[1]))

    assert [(f.row, f.rows) for f in result.failed] == [(50, 50)]
    assert "changed after its rows were planned" in result.failed[0].error
