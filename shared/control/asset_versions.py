"""The version records of model, code and data assets in the registry container.

`assets/<kind>/<name>/versions/<N>.json` holds one AssetVersion (its content and what its
owner said of it); `assets/<kind>/<name>/digests/<digest>.json` names the version that
first registered a content, so identical content is one version. Both are written
create-only through storage.blob_records: of two registrations racing for a number one
wins, the other takes the next. A version's content never changes; its description, tags
and archived flag may. `latest` is the highest version not archived, as in Azure ML; an
archived version stays usable by its number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.contract import layout
from shared.contract.asset_spec import ASSET_KINDS, check_version
from shared.contract.deployment_spec import tags_field, text_field
from shared.contract.errors import Busy, Conflict, InvalidRequest, NotFound
from shared.contract.names import check_asset_name
from shared.contract.registry_records import AssetVersion
from shared.storage.blob_records import BlobRecords

MAX_ASSETS_LISTED = 1000  # assets of one kind a listing shows (the first by name)
UPDATABLE = frozenset({"archived", "description", "tags"})
_VERSION_ATTEMPTS = 20


class AssetVersions:
    """Reads, numbers and updates asset version records (the content is AssetStore's)."""

    def __init__(self, registry: ContainerClient) -> None:
        self._registry = registry
        self._records = BlobRecords(registry, load=AssetVersion.from_dict,
                                    dump=AssetVersion.to_dict, what="asset version")
        self._digests = BlobRecords(registry, load=dict, dump=dict, what="asset digest")

    # ----- reading ---------------------------------------------------------------------

    def get(self, kind: str, name: str, version: str) -> AssetVersion:
        """The version `name:version`; `latest` is the highest one not archived. NotFound
        when there is none (with a hint when every version is archived)."""
        check_kind(kind)
        check_asset_name(name)
        version = check_version(version, latest=True)
        if version != "latest":
            found = self._records.read(layout.asset_version_record(kind, name, version))
            if found is None:
                raise NotFound(f"{kind} asset {name}:{version} does not exist",
                               details={"asset": name, "version": version},
                               code="asset_not_found")
            return found
        numbers = sorted(self._numbers(kind, name), reverse=True)
        for number in numbers:
            found = self._records.read(layout.asset_version_record(kind, name, number))
            if found is not None and not found.archived:
                return found
        if numbers:
            raise NotFound(f"{kind} asset {name!r} has no active version: all "
                           f"{len(numbers)} are archived; restore one ({kind} restore --name "
                           f"{name} --version N) or name a version ({name}:N)",
                           details={"asset": name}, code="asset_archived")
        raise NotFound(f"{kind} asset {name!r} does not exist", details={"asset": name},
                       code="asset_not_found")

    def list_versions(self, kind: str, name: str, *,
                      include_archived: bool = False) -> list[AssetVersion]:
        """The versions of an asset, oldest first (archived ones only when asked)."""
        check_kind(kind)
        check_asset_name(name)
        records = (self._records.read(layout.asset_version_record(kind, name, number))
                   for number in sorted(self._numbers(kind, name)))
        return [r for r in records if r is not None and (include_archived or not r.archived)]

    def list_assets(self, kind: str, *, include_archived: bool = False) -> list[AssetVersion]:
        """The latest version of each asset of `kind`, by name: as `az ml model list` shows
        models. An asset whose versions are all archived shows only when asked."""
        check_kind(kind)
        prefix = layout.asset_kind_prefix(kind)
        try:
            names = [item.name[len(prefix):-1] for item in self._registry.walk_blobs(
                name_starts_with=prefix, delimiter="/") if item.name.endswith("/")]
        except ResourceNotFoundError:
            return []
        listed = []
        for name in sorted(names)[:MAX_ASSETS_LISTED]:
            versions = self.list_versions(kind, name, include_archived=include_archived)
            if versions:
                listed.append(versions[-1])
        return listed

    def find_by_digest(self, kind: str, name: str, digest: str) -> AssetVersion | None:
        """The version of `name` that first registered exactly this content, if any."""
        index = self._digests.read(layout.asset_digest_record(kind, name, digest))
        if index is None:
            return None
        return self._records.read(layout.asset_version_record(kind, name, index["version"]))

    # ----- writing ---------------------------------------------------------------------

    def record(self, kind: str, name: str, digest: str, version: str | None,
               make: Callable[[str], AssetVersion]) -> tuple[AssetVersion, bool]:
        """Record `make(<number>)` as a version of `name`: the number asked for, or the next
        free one; (version, created). Content registered before under another number keeps
        it, unless a number is asked for: that number then points at the same content."""
        existing = self.find_by_digest(kind, name, digest)
        if existing is not None and version in (None, existing.version):
            return existing, False
        if version is not None:
            return self._record_numbered(kind, name, digest, version, make)
        for _ in range(_VERSION_ATTEMPTS):
            number = str(max(self._numbers(kind, name), default=0) + 1)
            blob = layout.asset_version_record(kind, name, number)
            created = make(number)
            if not self._records.create(blob, created):
                continue  # another registration took this number: try the next
            if not self._digests.create(layout.asset_digest_record(kind, name, digest),
                                        {"version": number}):
                # The same content was registered concurrently: theirs wins, ours goes.
                self._records.delete(blob)
                winner = self.find_by_digest(kind, name, digest)
                assert winner is not None  # the index record we collided with names it
                return winner, False
            return created, True
        raise Busy(f"{kind} asset {name!r}: version numbers kept being taken concurrently "
                   f"{_VERSION_ATTEMPTS} times in a row; try again", details={"asset": name})

    def update(self, kind: str, name: str, version: str,
               changes: Mapping[str, Any]) -> AssetVersion:
        """Change a version's `archived`, `description` and/or `tags`."""
        apply = _changes(changes)
        found = self.get(kind, name, version)  # `latest`: the newest not archived
        return self._records.update(
            layout.asset_version_record(kind, name, found.version), apply,
            missing=lambda: NotFound(f"{kind} asset {name}:{version} does not exist",
                                     code="asset_not_found"))

    def archive_all(self, kind: str, name: str, archived: bool) -> list[AssetVersion]:
        """Archive (or restore) every version of an asset, as `az ml model archive` without
        a version archives the whole model."""
        versions = self.list_versions(kind, name, include_archived=True)
        if not versions:
            raise NotFound(f"{kind} asset {name!r} does not exist", details={"asset": name},
                           code="asset_not_found")
        return [self.update(kind, name, v.version, {"archived": archived}) for v in versions]

    # ----- helpers ---------------------------------------------------------------------

    def _record_numbered(self, kind: str, name: str, digest: str, version: str,
                         make: Callable[[str], AssetVersion]) -> tuple[AssetVersion, bool]:
        blob = layout.asset_version_record(kind, name, version)
        created = make(version)
        if self._records.create(blob, created):
            self._digests.create(layout.asset_digest_record(kind, name, digest),
                                 {"version": version})
            return created, True
        current = self._records.read(blob)
        if current is not None and current.content.digest == digest:
            return current, False  # the same content under that number: nothing to do
        raise Conflict(f"{kind} asset {name}:{version} already exists with other content: "
                       "versions never change; give another version or none (the next)",
                       details={"asset": name, "version": version}, code="version_exists")

    def _numbers(self, kind: str, name: str) -> list[int]:
        return version_numbers(self._registry, kind, name)


def version_numbers(registry: ContainerClient, kind: str, name: str) -> list[int]:
    """The version numbers of `kind` asset `name` (models, code, data, environments) whose
    records are in the `registry` container, unordered."""
    folder = layout.asset_versions_prefix(kind, name)
    try:
        names = list(registry.list_blob_names(name_starts_with=folder))
    except ResourceNotFoundError:
        return []
    stems = (n[len(folder):-len(".json")] for n in names if n.endswith(".json"))
    return [int(stem) for stem in stems if stem.isdigit()]


def check_kind(kind: str) -> None:
    """InvalidRequest unless `kind` is an asset kind (model, code, data)."""
    if kind not in ASSET_KINDS:
        raise InvalidRequest(f"unknown asset kind {kind!r}: expected one of {ASSET_KINDS}",
                             code="invalid_asset_kind")


def _changes(changes: Mapping[str, Any]) -> Callable[[AssetVersion], AssetVersion]:
    """The change a version update asks for, validated before anything is read."""
    if not isinstance(changes, Mapping) or not changes:
        raise InvalidRequest("nothing to update: give archived, description and/or tags",
                             code="invalid_update")
    unknown = sorted(set(changes) - UPDATABLE)
    if unknown:
        raise InvalidRequest(f"cannot update {', '.join(unknown)} of an asset version (its "
                             f"content never changes); updatable: {', '.join(sorted(UPDATABLE))}",
                             code="invalid_update")
    archived = changes.get("archived")
    if "archived" in changes and not isinstance(archived, bool):
        raise InvalidRequest("archived must be true or false", details={"field": "archived"},
                             code="invalid_update")
    description = (text_field(changes["description"], "description")
                   if "description" in changes else None)
    tags = tags_field(changes["tags"], "tags") if "tags" in changes else None

    def apply(current: AssetVersion) -> AssetVersion:
        return replace(current,
                       archived=current.archived if archived is None else archived,
                       description=current.description if description is None else description,
                       tags=current.tags if tags is None else tags)

    return apply
