"""Asset integrity against a real Azurite: the server hashes what was uploaded before it
registers a version, and no upload grant reaches a registered version's files."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from batchfn.uploads import upload_files
from shared.contract.asset_manifest import scan_folder
from shared.contract.errors import Unprocessable
from shared.contract.layout import ASSETS_CONTAINER
from shared.control.asset_store import AssetStore
from shared.storage.account import StorageAccount


@pytest.fixture(scope="module")
def account(storage_connection: str) -> StorageAccount:
    return StorageAccount(connection_string=storage_connection)


def model_folder(base: Path, files: dict[str, bytes]) -> Path:
    folder = base / "model"
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def grant_url(grant: dict, path: str) -> str:
    return next(f["url"] for f in grant["files"] if f["path"] == path)


def version_bytes(account: StorageAccount, version, path: str) -> bytes:
    container = account.blob_service().get_container_client(ASSETS_CONTAINER)
    return container.download_blob(
        f"{version.content.prefix}{version.content.root}/{path}").readall()


def test_a_staged_file_that_differs_from_the_manifest_is_refused(account, tmp_path,
                                                                 unique_name):
    folder = model_folder(tmp_path, {"weights.bin": b"the real weights"})
    manifest = scan_folder(folder)
    store = AssetStore(account)
    grant = store.grant_upload("model", unique_name, manifest)
    upload_files(folder, manifest, grant)
    # Whoever holds the grant swaps the file for other bytes of the same size.
    BlobClient.from_blob_url(grant_url(grant, "weights.bin")).upload_blob(
        b"the fake weights", overwrite=True)
    with pytest.raises(Unprocessable) as refused:
        store.register("model", unique_name, manifest, grant["upload_id"])
    assert refused.value.details["mismatched"] == ["weights.bin"]
    assert store.versions.list_versions("model", unique_name) == []
    # The right bytes, staged again, register.
    upload_files(folder, manifest, grant)
    ref, created = store.register("model", unique_name, manifest, grant["upload_id"])
    assert created and version_bytes(account, ref, "weights.bin") == b"the real weights"


def test_a_grant_never_reaches_a_registered_versions_files(account, tmp_path, unique_name):
    big = os.urandom(9 * 1024 * 1024 + 5)  # several blocks, both when uploaded and published
    folder = model_folder(tmp_path, {"weights.bin": big, "config/labels.txt": b"cat\ndog\n"})
    manifest = scan_folder(folder)
    store = AssetStore(account)
    grant = store.grant_upload("model", unique_name, manifest)
    upload_files(folder, manifest, grant)
    ref, created = store.register("model", unique_name, manifest, grant["upload_id"])
    assert created
    published = version_bytes(account, ref, "weights.bin")
    assert hashlib.sha256(published).hexdigest() == hashlib.sha256(big).hexdigest()
    assert store.grant_upload("model", unique_name, manifest) == {
        "exists": True, "asset": store.versions.get("model", unique_name, "1").to_dict()}

    # The grant still writes to its own staging blob until it expires: that changes nothing.
    url = grant_url(grant, "config/labels.txt")
    BlobClient.from_blob_url(url).upload_blob(b"evil\n", overwrite=True)
    assert version_bytes(account, ref, "config/labels.txt") == b"cat\ndog\n"
    # Its signature does not open the version's own blobs.
    parts = urlsplit(url)
    final = account.blob_service().get_blob_client(
        ASSETS_CONTAINER, f"{ref.content.prefix}{ref.content.root}/config/labels.txt").url
    with pytest.raises(HttpResponseError) as denied:
        BlobClient.from_blob_url(f"{final}?{parts.query}").upload_blob(b"evil\n", overwrite=True)
    assert denied.value.status_code == 403
    assert version_bytes(account, ref, "config/labels.txt") == b"cat\ndog\n"
    # And registering the same content again (any upload id) keeps version 1 as it was.
    again, created = store.register("model", unique_name, manifest, grant["upload_id"])
    assert (again, created) == (ref, False)


def test_concurrent_registrations_publish_only_verified_bytes(account, tmp_path, unique_name):
    folder = model_folder(tmp_path, {"weights.bin": b"w" * 5000})
    manifest = scan_folder(folder)
    store = AssetStore(account)
    honest = store.grant_upload("model", unique_name, manifest)
    upload_files(folder, manifest, honest)
    forged = store.grant_upload("model", unique_name, manifest)
    BlobClient.from_blob_url(grant_url(forged, "weights.bin")).upload_blob(b"x" * 5000)
    outcomes: list[object] = []
    barrier = threading.Barrier(6)

    def register(upload_id: str) -> None:
        barrier.wait()
        try:
            outcomes.append(AssetStore(account).register("model", unique_name, manifest,
                                                         upload_id))
        except Unprocessable as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=register, args=(grant["upload_id"],))
               for grant in (honest, forged) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = store.versions.list_versions("model", unique_name)
    assert [v.version for v in versions] == ["1"]
    assert version_bytes(account, versions[0], "weights.bin") == b"w" * 5000
    assert sum(1 for o in outcomes if isinstance(o, tuple) and o[1]) == 1
