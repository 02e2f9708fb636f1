"""Client side of asset uploads: stream a folder's files to the write URLs of a grant.

Files go straight to blob storage in blocks, a few files at a time, so memory stays
bounded whatever the folder's size (a 1 GB model costs a few blocks of buffer, not 1 GB).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobClient, ContentSettings

from shared.assets import AssetManifest

BLOCK_SIZE = 4 * 1024 * 1024
PARALLEL_FILES = 4


def upload_files(folder: str | Path, manifest: AssetManifest, grant: Mapping[str, Any]) -> None:
    """Upload every file of `manifest` from `folder` to the URL the grant gives for it."""
    base = Path(folder)
    urls = {entry["path"]: entry["url"] for entry in grant["files"]}
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES) as pool:
        futures = [pool.submit(_upload_one, base / f.path, urls[f.path], f.size, f.md5)
                   for f in manifest.files]
        for future in futures:
            future.result()


def _upload_one(path: Path, url: str, size: int, md5_hex: str) -> None:
    blob = BlobClient.from_blob_url(url, max_single_put_size=BLOCK_SIZE,
                                    max_block_size=BLOCK_SIZE)
    # Content-MD5 lets the API check, at registration, that each blob is the file hashed.
    settings = ContentSettings(content_md5=bytearray.fromhex(md5_hex))
    with path.open("rb") as stream:
        blob.upload_blob(stream, length=size, overwrite=True, content_settings=settings,
                         max_concurrency=2)
