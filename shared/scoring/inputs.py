"""Downloading a mini-batch's input files into a local folder, concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.scoring.batch import InputFile
from shared.scoring.futures import wait_all
from shared.scoring.paths import relative_parts


class InputMissing(LookupError):
    """An input blob no longer exists (deleted after the job was planned)."""

    def __init__(self, file: InputFile) -> None:
        super().__init__(f"input file not found: {file.display_name} "
                         f"({file.container}/{file.blob_name})")
        self.file = file


def local_paths(files: Sequence[InputFile], folder: Path) -> list[Path]:
    """Where each input lands: `folder`/<display name>, keeping the original file name.

    Scripts use os.path.basename(path) in their outputs, so names are kept; a clash (two
    display names that differ only in dropped ".." parts) goes into a numbered sub-folder.
    """
    paths: list[Path] = []
    taken: set[Path] = set()
    for number, file in enumerate(files):
        parts = relative_parts(file.display_name) or relative_parts(file.blob_name) or ("input",)
        path = folder.joinpath(*parts)
        if path in taken:
            path = folder / f".{number}" / parts[-1]
        taken.add(path)
        paths.append(path)
    return paths


def download_inputs(blobs: BlobServiceClient, executor: Executor,
                    files: Sequence[InputFile], folder: Path) -> list[str]:
    """Download `files` into `folder` concurrently; returns their local paths in order.

    Raises InputMissing for a blob that does not exist; other storage errors propagate.
    """
    paths = local_paths(files, folder)
    jobs = [executor.submit(_download, blobs, file, path)
            for file, path in zip(files, paths, strict=True)]
    wait_all(jobs)
    return [str(path) for path in paths]


def _download(blobs: BlobServiceClient, file: InputFile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = blobs.get_blob_client(file.container, file.blob_name)
    try:
        data = blob.download_blob().readall()
    except ResourceNotFoundError:
        raise InputMissing(file) from None
    path.write_bytes(data)
