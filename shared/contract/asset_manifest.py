"""Asset manifests: what a model or code folder holds, hashed on the client, checked by the API.

A folder is described by an `AssetManifest`: its own name (`root`) and, per file, the
relative path, size, sha256 and md5. The manifest's digest identifies the content, so
uploading identical content under the same asset name never creates a new version. It is a
sha256 over an unambiguous encoding of the folder name and the sorted (path, sha256) pairs
(JSON: no path can pass for a separator), and paths hold no control characters. Pure
Python: the CLI and client import it without any storage SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidRequest
from .names import check_asset_name, check_relative_path

MAX_MANIFEST_FILES = 100_000
# Names the digest's encoding, so that no digest of another encoding can equal one of this.
DIGEST_SCHEME = "batchfn-asset-digest/2"
SINGLE_FILE_ROOT = "file"  # the root folder of a one-file asset (scan_file)
_HASH_CHUNK = 4 * 1024 * 1024
_RESOURCE_ID = re.compile(
    r"(?:azureml:)?/subscriptions/[^/]+/resource[gG]roups/[^/]+/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/[^/]+/(?:models|codes|data)/"
    r"(?P<name>[^/]+)/versions/(?P<version>[^/]+)")


@dataclass(frozen=True)
class ManifestFile:
    """One file of an asset folder: path relative to the folder, size and hashes (hex)."""

    path: str
    size: int
    sha256: str
    md5: str


@dataclass(frozen=True)
class AssetManifest:
    """What a folder holds; `digest` identifies its content (including the folder name)."""

    root: str
    files: tuple[ManifestFile, ...]

    @property
    def digest(self) -> str:
        """sha256 of DIGEST_SCHEME and the JSON list [root, [[path, sha256], ...]] (sorted
        by path): two manifests share a digest only when they list the same names and
        contents."""
        pairs = sorted([f.path, f.sha256] for f in self.files)
        encoded = json.dumps([self.root, pairs],
                             ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(f"{DIGEST_SCHEME}\n{encoded}".encode("ascii")).hexdigest()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "files": [asdict(f) for f in self.files]}

    @classmethod
    def from_dict(cls, data: Any) -> AssetManifest:
        """Validate a manifest received from a client."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("manifest must be an object with 'root' and 'files'",
                                 code="invalid_manifest")
        root = check_asset_name(data.get("root"))
        raw_files = data.get("files")
        if not isinstance(raw_files, list) or not raw_files:
            raise InvalidRequest("manifest.files must be a non-empty list (is the folder empty?)",
                                 code="invalid_manifest")
        if len(raw_files) > MAX_MANIFEST_FILES:
            raise InvalidRequest(f"an asset may hold at most {MAX_MANIFEST_FILES} files",
                                 code="invalid_manifest")
        files = []
        for entry in raw_files:
            if not isinstance(entry, Mapping):
                raise InvalidRequest("each manifest file must be an object",
                                     code="invalid_manifest")
            path = check_relative_path(entry.get("path"), field="manifest file path")
            size, sha256, md5 = entry.get("size"), entry.get("sha256"), entry.get("md5")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidRequest(f"manifest file {path}: size must be an integer >= 0",
                                     code="invalid_manifest")
            if not _is_hex(sha256, 64) or not _is_hex(md5, 32):
                raise InvalidRequest(f"manifest file {path}: sha256/md5 must be hex digests",
                                     code="invalid_manifest")
            files.append(ManifestFile(path, size, sha256.lower(), md5.lower()))
        files.sort(key=lambda f: f.path)
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise InvalidRequest("manifest lists a file twice", code="invalid_manifest")
        return cls(root=root, files=tuple(files))


def scan_folder(folder: str | os.PathLike[str]) -> AssetManifest:
    """Hash every file under `folder` in fixed-size chunks (memory stays bounded)."""
    base = Path(folder)
    if not base.is_dir():
        raise InvalidRequest(f"folder {str(base)!r} does not exist or is not a folder",
                             details={"path": str(base)}, code="folder_not_found")
    files = []
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        relative = path.relative_to(base).as_posix()
        if "__pycache__" in relative.split("/"):
            continue
        check_relative_path(relative, field=f"file name in {str(base)!r}")
        files.append(_hashed(path, relative))
    if not files:
        raise InvalidRequest(f"folder {str(base)!r} is empty", details={"path": str(base)},
                             code="folder_empty")
    return AssetManifest(root=check_asset_name(base.resolve().name), files=tuple(files))


def scan_file(file: str | os.PathLike[str]) -> AssetManifest:
    """One file as an asset (a uri_file data asset): under the root folder `file`."""
    path = Path(file)
    if not path.is_file():
        raise InvalidRequest(f"file {str(path)!r} does not exist or is not a file",
                             details={"path": str(path)}, code="file_not_found")
    return AssetManifest(root=SINGLE_FILE_ROOT, files=(
        _hashed(path, check_relative_path(path.name, field="file name")),))


def _hashed(path: Path, relative: str) -> ManifestFile:
    """Hash one file in fixed-size chunks."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return ManifestFile(relative, size, sha256.hexdigest(), md5.hexdigest())


def parse_asset_ref(text: Any) -> tuple[str, str]:
    """Split an asset reference into (name, version); version may be "latest".

    Accepts `azureml:name:version`, `name:version`, `azureml:name@latest` and Azure ML's
    resource ids (`azureml:/subscriptions/.../workspaces/<w>/models/<name>/versions/<v>`,
    also `codes/...` and `data/...`): batchfn has one workspace, so only the name and version count.
    Registry references (`azureml://registries/...`) are refused: batchfn has no registries.
    """
    if not isinstance(text, str) or not text:
        raise InvalidRequest(f"invalid asset reference {text!r}", code="invalid_reference")
    if text.startswith("azureml://registries/"):
        raise InvalidRequest(
            f"asset reference {text!r} names an Azure ML registry; batchfn has no registries: "
            "register the asset with batchfn and use azureml:<name>:<version>",
            details={"value": text}, code="registry_not_supported")
    resource_id = _RESOURCE_ID.fullmatch(text)
    if resource_id:
        name, version = resource_id.group("name"), resource_id.group("version")
    else:
        body = text.removeprefix("azureml:")
        if body.endswith("@latest"):
            name, version = body[: -len("@latest")], "latest"
        elif ":" in body:
            name, _, version = body.rpartition(":")
        else:
            raise InvalidRequest(
                f"invalid asset reference {text!r}: expected azureml:<name>:<version> or "
                "azureml:<name>@latest", code="invalid_reference")
    check_asset_name(name)
    if version != "latest" and not version.isdigit():
        raise InvalidRequest(f"invalid asset version {version!r} in {text!r}",
                             code="invalid_reference")
    return name, version


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and all(
        c in "0123456789abcdefABCDEF" for c in value)
