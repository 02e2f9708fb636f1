"""Client side of uploads: stream local files to the write URLs a grant of the API gives.

Files go straight to blob storage in blocks, a few files at a time, so memory stays
bounded whatever the folder's size (a 1 GB model costs a few blocks of buffer, not 1 GB).
The Azure blob SDK is imported here, inside the functions, and only when an upload runs:
every other command of the CLI starts without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from batchfn.contract.asset_manifest import AssetManifest

BLOCK_SIZE = 4 * 1024 * 1024
PARALLEL_FILES = 4
PARALLEL_INPUT_FILES = 8


def upload_files(folder: str | Path, manifest: AssetManifest, grant: Mapping[str, Any]) -> None:
    """Upload every file of `manifest` from `folder` to the URL the grant gives for it."""
    base = Path(folder)
    urls = {entry["path"]: entry["url"] for entry in grant["files"]}
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES) as pool:
        futures = [pool.submit(_upload_asset_file, base / f.path, urls[f.path], f.size)
                   for f in manifest.files]
        for future in futures:
            future.result()


def upload_inputs(base: Path, files: Sequence[Mapping[str, str]]) -> None:
    """Upload input files (`{"path": relative to base, "url": write URL}`) side by side."""
    from azure.storage.blob import BlobClient

    def upload(entry: Mapping[str, str]) -> None:
        blob = BlobClient.from_blob_url(entry["url"], max_single_put_size=BLOCK_SIZE,
                                        max_block_size=BLOCK_SIZE)
        with (base / entry["path"]).open("rb") as stream:
            blob.upload_blob(stream, overwrite=True)

    with ThreadPoolExecutor(PARALLEL_INPUT_FILES) as pool:
        list(pool.map(upload, files))


def _upload_asset_file(path: Path, url: str, size: int) -> None:
    from azure.storage.blob import BlobClient

    blob = BlobClient.from_blob_url(url, max_single_put_size=BLOCK_SIZE,
                                    max_block_size=BLOCK_SIZE)
    # A staging URL of this upload alone; the API hashes the file at registration.
    with path.open("rb") as stream:
        blob.upload_blob(stream, length=size, overwrite=True, max_concurrency=2)
