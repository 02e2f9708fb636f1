"""Local copies of deployment assets (model and code folders), downloaded once per version."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from shared.contract.errors import NotFound
from shared.contract.layout import ASSETS_CONTAINER
from shared.contract.registry_records import AssetRef
from shared.scoring.work_folders import relative_parts, safe_segment


class AssetCache:
    """Downloads an asset's files under its prefix into `root`, once per version.

    `folder(asset)` returns a local folder D holding D/<asset.root>/... . A copy appears by
    renaming a finished temporary folder, so no caller (thread or process) sees half a
    folder, and callers in this process wait for one download instead of starting their own.
    """

    def __init__(self, blobs: BlobServiceClient, root: Path, executor: Executor,
                 container: str = ASSETS_CONTAINER) -> None:
        self._blobs = blobs
        self._root = root
        self._executor = executor
        self._container = container
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def folder(self, asset: AssetRef) -> Path:
        """The local folder containing `asset`'s folder, downloading it if needed."""
        target = (self._root / safe_segment(asset.kind) / safe_segment(asset.name)
                  / safe_segment(f"{asset.version}-{asset.digest[:16]}"))
        if target.is_dir():
            return target
        with self._lock_for(target):
            if not target.is_dir():
                self._download(asset, target)
        return target

    def _lock_for(self, target: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(target, threading.Lock())

    def _download(self, asset: AssetRef, target: Path) -> None:
        container = self._blobs.get_container_client(self._container)
        names = list(container.list_blob_names(name_starts_with=asset.prefix))
        if not names:
            raise NotFound(f"{asset.kind} asset {asset.ref} has no files under "
                           f"{self._container}/{asset.prefix}")
        staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        staging.mkdir(parents=True)
        try:
            jobs = []
            for name in names:
                parts = relative_parts(name[len(asset.prefix):])
                if not parts:
                    continue
                jobs.append(self._executor.submit(
                    _download_blob, container, name, staging.joinpath(*parts)))
            wait_all(jobs)
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # another process may have won the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _download_blob(container, name: str, path: Path) -> None:  # noqa: ANN001
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        container.download_blob(name, max_concurrency=4).readinto(file)


def wait_all(futures: Iterable[Future]) -> None:
    """Wait for every future (none is left writing), then raise the first error, if any."""
    error: BaseException | None = None
    for future in futures:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error = error or exc
    if error is not None:
        raise error
