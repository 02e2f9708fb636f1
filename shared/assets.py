"""Versioned, content-addressed model and code assets in storage (the manifest a client
sends is described in shared/asset_manifest.py).

Files live in the assets container at `<kind dir>/<name>/<digest>/<root>/<path>`: the
location depends only on the content, so a client uploads straight to it (with per-file
write grants the API issues) and registration only records a version number:
`assets/<kind>/<name>/versions/<N>.json` (the AssetRef) plus the index
`assets/<kind>/<name>/digests/<digest>.json`, both written create-only so that concurrent
registrations of the same content agree on one version.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from shared.asset_manifest import AssetManifest
from shared.errors import InvalidRequest, NotFound, Unprocessable
from shared.layout import ASSETS_CONTAINER, REGISTRY_CONTAINER
from shared.names import check_asset_name, check_relative_path
from shared.records import AssetRef
from shared.storage import StorageAccount

ASSET_KINDS = ("model", "code")
_KIND_DIRS = {"model": "models", "code": "code"}
UPLOAD_GRANT_TTL = timedelta(hours=2)


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
