"""Registering an asset version from an API body: uploaded content, or (data assets) a
location jobs may already read.

Uploaded content: the folder's manifest and the upload grant's id (AssetStore.register).
A data location: `path`, a datastore path or a storage URL of the app's account, checked
against the allow-list now (and again by every invoke that reads it); it is recorded as
given, nothing is copied. Either may carry the metadata fields (type, description, tags,
version).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.contract.asset_manifest import AssetManifest
from shared.contract.asset_spec import AssetMetadata, data_reference
from shared.contract.errors import InvalidRequest
from shared.contract.registry_records import AssetVersion
from shared.control.asset_store import AssetStore
from shared.control.datastores import StorageBoundaries

_METADATA_KEYS = frozenset({"type", "description", "tags", "version"})
_CONTENT_KEYS = frozenset({"root", "files", "upload_id"})


def register_asset(assets: AssetStore, boundaries: StorageBoundaries, account_url: str,
                   kind: str, name: str, body: Any) -> tuple[AssetVersion, bool]:
    """Register the version a POST .../versions body describes; (version, created)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the body must be a JSON object", code="invalid_body")
    if kind == "data" and "path" in body:
        unknown = sorted(set(body) - _METADATA_KEYS - {"path"})
        if unknown:
            raise InvalidRequest(f"unknown field(s) of a data location: {', '.join(unknown)}",
                                 code="invalid_body")
        metadata = AssetMetadata.from_dict(kind, body)
        path = body["path"]
        if isinstance(path, str) and data_reference(path.strip()) is not None:
            raise InvalidRequest("a data asset's path is a location, not another data asset",
                                 details={"field": "path"}, code="invalid_location")
        location = boundaries.resolve_input(path, account_url, field="path")
        if metadata.type == "uri_file" and not location.path:
            raise InvalidRequest("a uri_file data asset must name a file, not a container",
                                 details={"field": "path"}, code="invalid_location")
        return assets.register_location(name, path.strip(), metadata)
    unknown = sorted(set(body) - _METADATA_KEYS - _CONTENT_KEYS)
    if unknown:
        where = " (a path is for data assets only)" if "path" in unknown else ""
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}{where}",
                             code="invalid_body")
    manifest = AssetManifest.from_dict({key: body.get(key) for key in ("root", "files")})
    return assets.register(kind, name, manifest, body.get("upload_id"),
                           AssetMetadata.from_dict(kind, body))
