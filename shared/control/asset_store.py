"""Versioned, content-addressed model and code assets in storage (the manifest a client
sends is described in contract/asset_manifest.py).

Uploading is three steps. A grant names a fresh upload id and gives per-file write URLs
under `staging/<upload id>/` of the assets container. The client writes the files there.
Registration then reads every staged file, checks its size and sha256 against the
manifest, and writes the bytes it hashed to the version's place,
`<kind dir>/<name>/<digest>/<root>/<path>`, create-only; only then is the version recorded
(`assets/<kind>/<name>/versions/<N>.json`, the AssetRef, plus the index
`assets/<kind>/<name>/digests/<digest>.json`, both create-only through
storage.blob_records, so concurrent registrations of the same content agree on one
version). No grant ever reaches a version's files: once registered, a version's content
cannot change, whatever a grant still allows until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
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
from shared.contract.errors import Busy, InvalidRequest, NotFound, Unprocessable
from shared.contract.layout import ASSETS_CONTAINER, REGISTRY_CONTAINER
from shared.contract.names import check_asset_name, check_relative_path
from shared.contract.registry_records import AssetRef
from shared.contract.timestamps import format_time
from shared.storage.account import StorageAccount
from shared.storage.blob_records import BlobRecords

ASSET_KINDS = tuple(layout.ASSET_FOLDERS)  # model, code
UPLOAD_GRANT_TTL = timedelta(hours=2)
MAX_VERSION_DIGITS = 9
PARALLEL_FILES = 2  # files checked and published at once by a registration
# Registration streams every staged byte through the API host: in chunks of this size (the
# SDK's default first read is 32 MiB), so a 1 GB model costs a few chunks of memory.
PUBLISH_CHUNK = 4 * 1024 * 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_VERSION_ATTEMPTS = 20


@dataclass(frozen=True)
class _Published:
    """What publishing one staged file found: nothing wrong, or why it was not published."""

    path: str
    problem: str | None = None  # "missing" | "mismatched"


class AssetStore:
    """Registers and resolves asset versions; issues upload grants for their files."""

    def __init__(self, account: StorageAccount) -> None:
        self._service = account.blob_service(max_single_get_size=PUBLISH_CHUNK,
                                             max_chunk_get_size=PUBLISH_CHUNK)
        registry = self._service.get_container_client(REGISTRY_CONTAINER)
        self._versions = BlobRecords(registry, load=lambda data: AssetRef(**data), dump=asdict,
                                     what="asset version")
        self._digests = BlobRecords(registry, load=dict, dump=dict, what="asset digest")
        self._registry = registry
        self._assets = self._service.get_container_client(ASSETS_CONTAINER)
        self._assets_ready = False

    def get(self, kind: str, name: str, version: str) -> AssetRef:
        """The asset `name:version` (`version` may be "latest"); NotFound if absent."""
        _check_kind(kind)
        check_asset_name(name)
        if version == "latest":
            versions = self._version_numbers(kind, name)
            if not versions:
                raise NotFound(f"{kind} asset {name!r} has no versions", code="asset_not_found")
            version = str(max(versions))
        elif not (version.isdigit() and len(version) <= MAX_VERSION_DIGITS):
            raise InvalidRequest(f"invalid asset version {version!r}: a number (at most "
                                 f"{MAX_VERSION_DIGITS} digits) or latest",
                                 details={"field": "version"}, code="invalid_version")
        found = self._versions.read(layout.asset_version_record(kind, name, int(version)))
        if found is None:
            raise NotFound(f"{kind} asset {name}:{version} does not exist", code="asset_not_found")
        return found

    def list_versions(self, kind: str, name: str) -> list[AssetRef]:
        """All versions of an asset, oldest first."""
        _check_kind(kind)
        check_asset_name(name)
        return [self.get(kind, name, str(n)) for n in sorted(self._version_numbers(kind, name))]

    def find_by_digest(self, kind: str, name: str, digest: str) -> AssetRef | None:
        """The version of `name` holding exactly this content, if one was registered."""
        index = self._digests.read(layout.asset_digest_record(kind, name, digest))
        return None if index is None else self.get(kind, name, str(index["version"]))

    def grant_upload(self, kind: str, name: str, manifest: AssetManifest) -> dict[str, Any]:
        """Either the existing version with this content, or an upload id and per-file write
        URLs under its staging folder."""
        _check_kind(kind)
        check_asset_name(name)
        existing = self.find_by_digest(kind, name, manifest.digest)
        if existing is not None:
            return {"exists": True, "asset": asdict(existing)}
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

    def register(self, kind: str, name: str, manifest: AssetManifest,
                 upload_id: Any = None) -> tuple[AssetRef, bool]:
        """Check the files staged under `upload_id` against the manifest, publish them and
        record them as the next version; returns (asset, created). Content already
        registered under `name` returns that version (no upload needed)."""
        _check_kind(kind)
        check_asset_name(name)
        existing = self.find_by_digest(kind, name, manifest.digest)
        if existing is not None:
            return existing, False
        if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
            raise InvalidRequest("upload_id is required: the id of the upload grant the files "
                                 "were written with (POST .../uploads)",
                                 details={"field": "upload_id"}, code="invalid_upload_id")
        prefix = layout.asset_content(kind, name, manifest.digest)
        self._publish(upload_id, prefix, manifest)
        for _ in range(_VERSION_ATTEMPTS):
            version = str(max(self._version_numbers(kind, name), default=0) + 1)
            ref = AssetRef(kind=kind, name=name, version=version, digest=manifest.digest,
                           prefix=prefix, root=manifest.root, files=len(manifest.files),
                           size=manifest.size)
            version_blob = layout.asset_version_record(kind, name, version)
            if not self._versions.create(version_blob, ref):
                continue  # another registration took this number; try the next one
            if not self._digests.create(layout.asset_digest_record(kind, name, manifest.digest),
                                        {"version": version}):
                # The same content was registered concurrently: theirs wins, ours goes.
                self._versions.delete(version_blob)
                winner = self.find_by_digest(kind, name, manifest.digest)
                assert winner is not None  # the index record we collided with names it
                return winner, False
            self._discard_staging(upload_id)
            return ref, True
        raise Busy(f"{kind} asset {name!r}: version numbers kept being taken "
                         f"concurrently {_VERSION_ATTEMPTS} times in a row; try again",
                         details={"asset": name})

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

    # ----- publishing ------------------------------------------------------------------

    def _publish(self, upload_id: str, prefix: str, manifest: AssetManifest) -> None:
        """Copy every staged file whose bytes match the manifest to the version's place;
        Unprocessable (nothing recorded) when any is missing or different."""
        def publish(entry: ManifestFile) -> _Published:
            staged = self._assets.get_blob_client(
                _staged_blob(upload_id, manifest.root, entry.path))
            final = self._assets.get_blob_client(f"{prefix}{manifest.root}/{entry.path}")
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

    # ----- storage helpers -------------------------------------------------------------

    def _version_numbers(self, kind: str, name: str) -> list[int]:
        folder = layout.asset_versions_prefix(kind, name)
        try:
            names = list(self._registry.list_blob_names(name_starts_with=folder))
        except ResourceNotFoundError:
            return []
        stems = (n[len(folder):-len(".json")] for n in names if n.endswith(".json"))
        return [int(stem) for stem in stems if stem.isdigit()]

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


def _check_kind(kind: str) -> None:
    if kind not in ASSET_KINDS:
        raise InvalidRequest(f"unknown asset kind {kind!r}: expected one of {ASSET_KINDS}",
                             code="invalid_asset_kind")
