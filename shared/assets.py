"""Versioned, content-addressed model and code assets.

A folder is described by an `AssetManifest`: its own name (`root`) and, per file, the
relative path, size, sha256 and md5. The manifest's digest (sha256 over the sorted
`root/path<TAB>sha256` lines) identifies the content, so uploading identical content under
the same asset name never creates a new version.

Files live in the assets container at `<kind dir>/<name>/<digest>/<root>/<path>`: the
location depends only on the content, so a client uploads straight to it (with per-file
write grants the API issues) and registration only records a version number:
`assets/<kind>/<name>/versions/<N>.json` (the AssetRef) plus the index
`assets/<kind>/<name>/digests/<digest>.json`, both written create-only so that concurrent
registrations of the same content agree on one version.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from shared.errors import InvalidRequest, NotFound, Unprocessable
from shared.layout import ASSETS_CONTAINER, REGISTRY_CONTAINER
from shared.names import check_asset_name, check_relative_path
from shared.records import AssetRef
from shared.storage import StorageAccount

ASSET_KINDS = ("model", "code")
_KIND_DIRS = {"model": "models", "code": "code"}
MAX_MANIFEST_FILES = 100_000
UPLOAD_GRANT_TTL = timedelta(hours=2)
_HASH_CHUNK = 4 * 1024 * 1024


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
        lines = "".join(f"{self.root}/{f.path}\t{f.sha256}\n" for f in self.files)
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()

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
        sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        with path.open("rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
        files.append(ManifestFile(relative, size, sha256.hexdigest(), md5.hexdigest()))
    if not files:
        raise InvalidRequest(f"folder {str(base)!r} is empty", details={"path": str(base)},
                             code="folder_empty")
    return AssetManifest(root=check_asset_name(base.resolve().name), files=tuple(files))


def parse_asset_ref(text: Any) -> tuple[str, str]:
    """Split `azureml:name:version`, `name:version` or `name@latest` into (name, version)."""
    if not isinstance(text, str) or not text:
        raise InvalidRequest(f"invalid asset reference {text!r}", code="invalid_reference")
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


class AssetStore:
    """Registers and resolves asset versions; issues upload grants for their files."""

    def __init__(self, account: StorageAccount) -> None:
        self._service = account.blob_service()
        self._registry = self._service.get_container_client(REGISTRY_CONTAINER)
        self._assets = self._service.get_container_client(ASSETS_CONTAINER)
        self._containers_ready = False

    def get(self, kind: str, name: str, version: str) -> AssetRef:
        """The asset `name:version` (`version` may be "latest"); NotFound if absent."""
        _check_kind(kind)
        check_asset_name(name)
        if version == "latest":
            versions = self._version_numbers(kind, name)
            if not versions:
                raise NotFound(f"{kind} asset {name!r} has no versions", code="asset_not_found")
            version = str(max(versions))
        data = self._read_json(f"{_index_dir(kind, name)}versions/{version}.json")
        if data is None:
            raise NotFound(f"{kind} asset {name}:{version} does not exist", code="asset_not_found")
        return AssetRef(**data)

    def list_versions(self, kind: str, name: str) -> list[AssetRef]:
        """All versions of an asset, oldest first."""
        _check_kind(kind)
        check_asset_name(name)
        return [self.get(kind, name, str(n)) for n in sorted(self._version_numbers(kind, name))]

    def find_by_digest(self, kind: str, name: str, digest: str) -> AssetRef | None:
        """The version of `name` holding exactly this content, if one was registered."""
        index = self._read_json(f"{_index_dir(kind, name)}digests/{digest}.json")
        return None if index is None else self.get(kind, name, index["version"])

    def grant_upload(self, kind: str, name: str, manifest: AssetManifest) -> dict[str, Any]:
        """Either the existing version with this content, or per-file write URLs for it."""
        _check_kind(kind)
        check_asset_name(name)
        existing = self.find_by_digest(kind, name, manifest.digest)
        if existing is not None:
            return {"exists": True, "asset": asdict(existing)}
        self._ensure_containers()
        prefix = _content_prefix(kind, name, manifest.digest)
        expiry = datetime.now(UTC) + UPLOAD_GRANT_TTL
        signer = self._sas_signer(expiry)
        files = []
        for entry in manifest.files:
            blob_name = f"{prefix}{manifest.root}/{entry.path}"
            url = self._assets.get_blob_client(blob_name).url
            files.append({"path": entry.path, "url": f"{url}?{signer(blob_name)}"})
        return {"exists": False, "digest": manifest.digest, "prefix": prefix,
                "expires_at": expiry.isoformat(), "files": files}

    def register(self, kind: str, name: str, manifest: AssetManifest) -> tuple[AssetRef, bool]:
        """Record uploaded content as the next version; returns (asset, created)."""
        _check_kind(kind)
        check_asset_name(name)
        existing = self.find_by_digest(kind, name, manifest.digest)
        if existing is not None:
            return existing, False
        self._ensure_containers()
        prefix = _content_prefix(kind, name, manifest.digest)
        self._verify_uploaded(prefix, manifest)
        index_dir = _index_dir(kind, name)
        while True:
            version = str(max(self._version_numbers(kind, name), default=0) + 1)
            ref = AssetRef(kind=kind, name=name, version=version, digest=manifest.digest,
                           prefix=prefix, root=manifest.root, files=len(manifest.files),
                           size=manifest.size)
            version_blob = f"{index_dir}versions/{version}.json"
            try:
                self._registry.upload_blob(version_blob, json.dumps(asdict(ref)), overwrite=False)
            except ResourceExistsError:
                continue  # another registration took this number; try the next one
            try:
                self._registry.upload_blob(f"{index_dir}digests/{manifest.digest}.json",
                                           json.dumps({"version": version}), overwrite=False)
            except ResourceExistsError:
                # The same content was registered concurrently: theirs wins, ours goes.
                self._registry.delete_blob(version_blob)
                winner = self.find_by_digest(kind, name, manifest.digest)
                assert winner is not None  # the index blob we collided with names it
                return winner, False
            return ref, True

    def read_file(self, ref: AssetRef, path: str, max_bytes: int = 1024 * 1024) -> bytes:
        """One file of an asset (e.g. the scoring script), refused above `max_bytes`."""
        check_relative_path(path)
        blob = self._assets.get_blob_client(f"{ref.prefix}{ref.root}/{path}")
        try:
            size = blob.get_blob_properties().size
            if size > max_bytes:
                raise Unprocessable(f"{path} in {ref.kind} {ref.ref} is larger than {max_bytes} "
                                    "bytes", code="file_too_large")
            return blob.download_blob().readall()
        except ResourceNotFoundError:
            raise NotFound(f"{path} is not in {ref.kind} {ref.ref}",
                           details={"asset": ref.ref, "path": path},
                           code="file_not_found") from None

    def _verify_uploaded(self, prefix: str, manifest: AssetManifest) -> None:
        folder = f"{prefix}{manifest.root}/"
        stored = {b.name[len(folder):]: b for b in self._assets.list_blobs(name_starts_with=folder)}
        missing, mismatched = [], []
        for entry in manifest.files:
            blob = stored.pop(entry.path, None)
            if blob is None:
                missing.append(entry.path)
                continue
            md5 = blob.content_settings.content_md5
            if blob.size != entry.size or (md5 and bytes(md5).hex() != entry.md5):
                mismatched.append(entry.path)
        if missing or mismatched or stored:
            raise Unprocessable(
                "the uploaded files do not match the manifest: upload them first "
                "(or again), then register",
                details={"missing": missing[:20], "mismatched": mismatched[:20],
                         "unexpected": sorted(stored)[:20]},
                code="upload_incomplete",
            )

    def _version_numbers(self, kind: str, name: str) -> list[int]:
        folder = f"{_index_dir(kind, name)}versions/"
        try:
            names = list(self._registry.list_blob_names(name_starts_with=folder))
        except ResourceNotFoundError:
            return []
        return [int(n[len(folder):-len(".json")]) for n in names if n.endswith(".json")]

    def _read_json(self, blob_name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._registry.download_blob(blob_name).readall())
        except ResourceNotFoundError:
            return None

    def _ensure_containers(self) -> None:
        if self._containers_ready:
            return
        for container in (self._registry, self._assets):
            try:
                container.create_container()
            except ResourceExistsError:
                pass
        self._containers_ready = True

    def _sas_signer(self, expiry: datetime):
        # Account key where the connection has one (Azurite, key-based accounts); otherwise a
        # user-delegation key from the app's identity, as Azure recommends.
        credential = self._service.credential
        account = self._service.account_name
        permission = BlobSasPermissions(create=True, write=True)
        key = getattr(credential, "account_key", None)
        if key:
            def sign(blob_name: str) -> str:
                return generate_blob_sas(account, ASSETS_CONTAINER, blob_name, account_key=key,
                                         permission=permission, expiry=expiry)
            return sign
        start = datetime.now(UTC) - timedelta(minutes=5)
        delegation = self._service.get_user_delegation_key(start, expiry)

        def sign_delegated(blob_name: str) -> str:
            return generate_blob_sas(account, ASSETS_CONTAINER, blob_name,
                                     user_delegation_key=delegation, permission=permission,
                                     expiry=expiry, start=start)
        return sign_delegated


def _content_prefix(kind: str, name: str, digest: str) -> str:
    return f"{_KIND_DIRS[kind]}/{name}/{digest}/"


def _index_dir(kind: str, name: str) -> str:
    return f"assets/{kind}/{name}/"


def _check_kind(kind: str) -> None:
    if kind not in ASSET_KINDS:
        raise InvalidRequest(f"unknown asset kind {kind!r}: expected one of {ASSET_KINDS}",
                             code="invalid_asset_kind")


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and all(
        c in "0123456789abcdefABCDEF" for c in value)
