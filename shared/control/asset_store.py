"""Content-addressed model, code and data assets in storage (the manifest a client sends is
described in contract/asset_manifest.py; the version records are asset_versions.py's).

Uploading is three steps. A grant names a fresh upload id and gives per-file write URLs
under `staging/<upload id>/` of the assets container. The client writes the files there.
Registration then reads every staged file, checks its size and sha256 against the
manifest, and writes the bytes it hashed to the version's place, create-only:
`<kind dir>/<name>/<digest>/<root>/<path>` of the assets container for models and code, of
the default datastore for data assets (jobs read them there). Only then is the version
recorded. No grant ever reaches a version's files: once registered, a version's content
cannot change, whatever a grant still allows until it expires. A data asset may instead
name a location jobs already read (a datastore path): it is recorded as it is.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobSasPermissions,
    ContentSettings,
    generate_blob_sas,
)

from shared.contract import layout
from shared.contract.asset_manifest import AssetManifest, ManifestFile
from shared.contract.asset_spec import AssetMetadata
from shared.contract.errors import Busy, InvalidRequest, NotFound, Unprocessable
from shared.contract.layout import ASSETS_CONTAINER, DEFAULT_DATASTORE, REGISTRY_CONTAINER
from shared.contract.mlmodel import MAX_MLMODEL_BYTES, MLMODEL_FILE, parse_mlmodel
from shared.contract.names import check_asset_name, check_relative_path
from shared.contract.registry_records import AssetRef, AssetVersion
from shared.contract.timestamps import format_time, utc_now
from shared.control.asset_versions import AssetVersions, check_kind
from shared.storage.account import StorageAccount

UPLOAD_GRANT_TTL = timedelta(hours=2)
PARALLEL_FILES = 2  # files checked and published at once by a registration
# Registration streams every staged byte through the API host: in chunks of this size (the
# SDK's default first read is 32 MiB), so a 1 GB model costs a few chunks of memory.
PUBLISH_CHUNK = 4 * 1024 * 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# The digest index of a data asset registered from a location: one version per location.
_LOCATION_DIGEST = "location:"


@dataclass(frozen=True)
class _Published:
    """What publishing one staged file found: nothing wrong, or why it was not published."""

    path: str
    problem: str | None = None  # "missing" | "mismatched"


class AssetStore:
    """Registers asset content and issues upload grants for it; `versions` reads and
    updates the version records."""

    def __init__(self, account: StorageAccount) -> None:
        self._service = account.blob_service(max_single_get_size=PUBLISH_CHUNK,
                                             max_chunk_get_size=PUBLISH_CHUNK)
        self.versions = AssetVersions(self._service.get_container_client(REGISTRY_CONTAINER))
        self._assets = self._service.get_container_client(ASSETS_CONTAINER)
        self._assets_ready = False

    def grant_upload(self, kind: str, name: str, manifest: AssetManifest) -> dict[str, Any]:
        """Either the existing version with this content, or an upload id and per-file write
        URLs under its staging folder."""
        check_kind(kind)
        check_asset_name(name)
        existing = self.versions.find_by_digest(kind, name, manifest.digest)
        if existing is not None:
            return {"exists": True, "asset": existing.to_dict()}
        self._ensure_assets_container()
        upload_id = uuid.uuid4().hex
        expiry = datetime.now(UTC) + UPLOAD_GRANT_TTL
        signer = self._sas_signer(expiry)
        files = []
        for entry in manifest.files:
            blob_name = _staged_blob(upload_id, manifest.root, entry.path)
            url = self._assets.get_blob_client(blob_name).url
            files.append({"path": entry.path, "url": f"{url}?{signer(blob_name)}"})
        return {"exists": False, "upload_id": upload_id, "digest": manifest.digest,
                "expires_at": format_time(expiry), "files": files}

    def register(self, kind: str, name: str, manifest: AssetManifest, upload_id: Any = None,
                 metadata: AssetMetadata | None = None) -> tuple[AssetVersion, bool]:
        """Check the files staged under `upload_id` against the manifest, publish them and
        record them as a version (the one `metadata` asks for, or the next); returns
        (asset, created). Content already registered under `name` returns that version (no
        upload needed) unless another version number is asked for, which then points at the
        same files."""
        check_kind(kind)
        check_asset_name(name)
        metadata = metadata or AssetMetadata.from_dict(kind, {})
        if kind == "data" and metadata.type == "uri_file" and len(manifest.files) != 1:
            raise InvalidRequest(f"a uri_file data asset holds one file, not "
                                 f"{len(manifest.files)}: register the folder as uri_folder",
                                 details={"field": "type"}, code="invalid_asset_type")
        prefix = layout.asset_content(kind, name, manifest.digest)
        if self.versions.find_by_digest(kind, name, manifest.digest) is None:
            if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
                raise InvalidRequest("upload_id is required: the id of the upload grant the "
                                     "files were written with (POST .../uploads)",
                                     details={"field": "upload_id"}, code="invalid_upload_id")
            self._publish(upload_id, kind, prefix, manifest)
            if metadata.type == "mlflow_model":
                self._check_mlflow_model(kind, name, prefix, manifest.root)
        content = AssetRef(kind=kind, name=name, version="", digest=manifest.digest,
                           prefix=prefix, root=manifest.root, files=len(manifest.files),
                           size=manifest.size)
        path = None
        if kind == "data":
            located = prefix + manifest.root + (
                f"/{manifest.files[0].path}" if metadata.type == "uri_file" else "")
            path = f"azureml://datastores/{DEFAULT_DATASTORE}/paths/{located}"
        asset, created = self.versions.record(
            kind, name, manifest.digest, metadata.version,
            lambda number: _version(content, number, metadata, path))
        if created and isinstance(upload_id, str) and _UPLOAD_ID.fullmatch(upload_id):
            self._discard_staging(upload_id)
        return asset, created

    def register_location(self, name: str, path: str,
                          metadata: AssetMetadata) -> tuple[AssetVersion, bool]:
        """Record a data asset at a location jobs may read (the caller checked it): no copy.
        The same location registered again is the same version."""
        check_asset_name(name)
        digest = hashlib.sha256((_LOCATION_DIGEST + path).encode()).hexdigest()
        content = AssetRef(kind="data", name=name, version="", digest=digest, prefix="",
                           root="")
        return self.versions.record("data", name, digest, metadata.version,
                                    lambda number: _version(content, number, metadata, path))

    def read_file(self, ref: AssetRef, path: str, max_bytes: int = 1024 * 1024) -> bytes:
        """One file of a model or code asset (e.g. the scoring script), refused above
        `max_bytes`."""
        check_relative_path(path)
        return _read_blob(self._assets.get_blob_client(f"{ref.prefix}{ref.root}/{path}"),
                          f"{ref.kind} {ref.ref}", path, max_bytes)

    # ----- publishing ------------------------------------------------------------------

    def _publish(self, upload_id: str, kind: str, prefix: str, manifest: AssetManifest) -> None:
        """Copy every staged file whose bytes match the manifest to the version's place;
        Unprocessable (nothing recorded) when any is missing or different."""
        target = self._content_container(kind)

        def publish(entry: ManifestFile) -> _Published:
            staged = self._assets.get_blob_client(
                _staged_blob(upload_id, manifest.root, entry.path))
            final = target.get_blob_client(f"{prefix}{manifest.root}/{entry.path}")
            return _publish_file(staged, final, entry)

        with ThreadPoolExecutor(PARALLEL_FILES) as pool:
            results = list(pool.map(publish, manifest.files))
        missing = [r.path for r in results if r.problem == "missing"]
        mismatched = [r.path for r in results if r.problem == "mismatched"]
        if missing or mismatched:
            raise Unprocessable(
                "the uploaded files do not match the manifest: upload them first "
                "(or again, with a new grant), then register",
                details={"missing": missing[:20], "mismatched": mismatched[:20]},
                code="upload_incomplete",
            )

    def _discard_staging(self, upload_id: str) -> None:
        # Best effort: a staged file left behind is never read again.
        names = list(self._assets.list_blob_names(
            name_starts_with=layout.staged_upload(upload_id)))
        for start in range(0, len(names), 256):
            try:
                self._assets.delete_blobs(*names[start:start + 256])
            except Exception:  # noqa: BLE001 - a partial batch failure changes nothing
                pass

    def _check_mlflow_model(self, kind: str, name: str, prefix: str, root: str) -> None:
        """A model registered as mlflow_model must be one the built-in scorer loads: an
        MLmodel file with the python_function flavor at the top of its folder."""
        blob = self._content_container(kind).get_blob_client(f"{prefix}{root}/{MLMODEL_FILE}")
        where = f"{root}/{MLMODEL_FILE} of model {name}"
        try:
            text = _read_blob(blob, f"model {name}", MLMODEL_FILE, MAX_MLMODEL_BYTES)
        except NotFound:
            raise Unprocessable(f"model {name} is registered as mlflow_model, but its folder "
                                f"{root}/ has no {MLMODEL_FILE} file at the top: register it "
                                "as custom_model, or register the MLflow model's own folder",
                                details={"field": "type"}, code="not_an_mlflow_model") from None
        parse_mlmodel(text, where)

    # ----- storage helpers -------------------------------------------------------------

    def _content_container(self, kind: str):  # noqa: ANN202 - a ContainerClient
        if kind != "data":
            return self._assets
        data = self._service.get_container_client(layout.asset_container(kind))
        try:
            data.create_container()
        except ResourceExistsError:
            pass
        return data

    def _ensure_assets_container(self) -> None:
        if self._assets_ready:
            return
        try:
            self._assets.create_container()
        except ResourceExistsError:
            pass
        self._assets_ready = True

    def _sas_signer(self, expiry: datetime):
        # Account key where the connection has one (Azurite, key-based accounts); otherwise a
        # user-delegation key from the app's identity, as Azure recommends. Staged blocks
        # need write as well as create.
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


def _publish_file(staged: BlobClient, final: BlobClient, entry: ManifestFile,
                  tries: int = 3) -> _Published:
    """Stream `staged` into `final` (create-only), hashing the bytes on the way; commit
    only when size and sha256 match `entry`. A `final` that already exists (a concurrent
    or interrupted registration) is accepted only if its own bytes match."""
    try:
        download = staged.download_blob()
    except ResourceNotFoundError:
        return _Published(entry.path, "missing")
    if download.size != entry.size:
        return _Published(entry.path, "mismatched")
    digest, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    # Block ids of our own: blocks another registration stages on the same blob stay theirs.
    writer = uuid.uuid4().hex
    blocks: list[BlobBlock] = []
    pending: bytes | None = None
    for chunk in download.chunks():
        digest.update(chunk)
        md5.update(chunk)
        if pending is not None:
            blocks.append(_stage(final, writer, len(blocks), pending))
        pending = chunk
    if digest.hexdigest() != entry.sha256:
        return _Published(entry.path, "mismatched")
    # Content-MD5 of the bytes written lets storage tools check a download of the file.
    settings = ContentSettings(content_md5=bytearray(md5.digest()))
    try:
        if blocks:
            blocks.append(_stage(final, writer, len(blocks), pending or b""))
            final.commit_block_list(blocks, content_settings=settings,
                                    match_condition=MatchConditions.IfMissing)
        else:
            final.upload_blob(pending or b"", overwrite=False, content_settings=settings)
    except (ResourceExistsError, ResourceModifiedError):
        return _accept_existing(staged, final, entry, tries)
    return _Published(entry.path)


def _read_blob(blob: BlobClient, what: str, path: str, max_bytes: int) -> bytes:
    try:
        size = blob.get_blob_properties().size
        if size > max_bytes:
            raise Unprocessable(f"{path} in {what} is larger than {max_bytes} bytes",
                                code="file_too_large")
        return blob.download_blob().readall()
    except ResourceNotFoundError:
        raise NotFound(f"{path} is not in {what}", details={"asset": what, "path": path},
                       code="file_not_found") from None


def _version(content: AssetRef, number: str, metadata: AssetMetadata,
             path: str | None) -> AssetVersion:
    """The record of `content` as version `number`."""
    return AssetVersion(content=replace(content, version=number), type=metadata.type,
                        description=metadata.description, tags=dict(metadata.tags),
                        created_at=utc_now(), path=path)


def _stage(blob: BlobClient, writer: str, index: int, data: bytes) -> BlobBlock:
    block_id = base64.b64encode(f"{writer}-{index:08d}".encode()).decode()
    blob.stage_block(block_id, data)
    return BlobBlock(block_id=block_id)


def _accept_existing(staged: BlobClient, final: BlobClient, entry: ManifestFile,
                     tries: int) -> _Published:
    """`final` exists: keep it when its bytes are the manifest's; otherwise (left by an
    interrupted writer) remove exactly that version of it and publish again."""
    download = final.download_blob()
    digest = hashlib.sha256()
    for chunk in download.chunks():
        digest.update(chunk)
    if download.size == entry.size and digest.hexdigest() == entry.sha256:
        return _Published(entry.path)
    if tries <= 1:
        raise Busy(f"{final.blob_name} kept changing while it was published; try again",
                         details={"path": entry.path})
    try:
        final.delete_blob(etag=download.properties.etag,
                          match_condition=MatchConditions.IfNotModified)
    except (ResourceModifiedError, ResourceNotFoundError):
        pass  # replaced meanwhile: the next try reads that one
    return _publish_file(staged, final, entry, tries - 1)


def _staged_blob(upload_id: str, root: str, path: str) -> str:
    return f"{layout.staged_upload(upload_id)}{root}/{path}"


