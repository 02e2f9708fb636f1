"""The asset cache against a real Azurite: one download per version, never half a folder."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core.exceptions import ResourceExistsError

from shared.contract.errors import NotFound
from shared.contract.layout import ASSETS_CONTAINER
from shared.contract.registry_records import AssetRef
from shared.scoring.asset_cache import AssetCache
from shared.storage.account import StorageAccount


@pytest.fixture(scope="module")
def blobs(storage_connection: str):
    service = StorageAccount(connection_string=storage_connection).blob_service()
    try:
        service.create_container(ASSETS_CONTAINER)
    except ResourceExistsError:
        pass
    return service


@pytest.fixture
def model(blobs) -> AssetRef:
    run = uuid.uuid4().hex[:8]
    asset = AssetRef(kind="model", name="cache-model", version="7", digest=f"d{run}",
                     prefix=f"models/cache-model/{run}/", root="model")
    container = blobs.get_container_client(ASSETS_CONTAINER)
    container.upload_blob(f"{asset.prefix}model/weights.bin", b"\x00" * 1000)
    container.upload_blob(f"{asset.prefix}model/config/labels.txt", b"cat\ndog\n")
    return asset


def test_concurrent_first_calls_download_once(blobs, model, tmp_path, monkeypatch):
    downloads = []
    original = AssetCache._download
    monkeypatch.setattr(AssetCache, "_download",
                        lambda self, asset, target: (downloads.append(asset),
                                                     original(self, asset, target)))
    with ThreadPoolExecutor(8) as executor:
        cache = AssetCache(blobs, tmp_path / "assets", executor)
        folders = list(executor.map(lambda _: cache.folder(model), range(4)))

    assert len(downloads) == 1
    assert len(set(folders)) == 1
    folder = folders[0]
    assert (folder / "model" / "weights.bin").read_bytes() == b"\x00" * 1000
    assert (folder / "model" / "config" / "labels.txt").read_text() == "cat\ndog\n"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging left


def test_a_second_cache_on_the_same_folder_reuses_the_copy(blobs, model, tmp_path):
    with ThreadPoolExecutor(2) as executor:
        first = AssetCache(blobs, tmp_path, executor).folder(model)
        (first / "model" / "marker").write_text("kept")
        second = AssetCache(blobs, tmp_path, executor).folder(model)

    assert second == first and (second / "model" / "marker").read_text() == "kept"


def test_an_asset_without_files_is_not_found(blobs, tmp_path):
    missing = AssetRef(kind="code", name="ghost", version="1", digest="0" * 64,
                       prefix=f"code/ghost/{uuid.uuid4().hex}/", root="code")
    with ThreadPoolExecutor(2) as executor:
        with pytest.raises(NotFound, match="ghost:1 has no files"):
            AssetCache(blobs, tmp_path, executor).folder(missing)
    assert not any(tmp_path.rglob("*.tmp"))

