"""Input and output locations: storage URLs and datastore paths, checked against the
app's own storage account so a job can never be pointed anywhere else (no SSRF)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from shared.errors import InvalidRequest
from shared.jobs.model import BlobLocation
from shared.layout import (
    ASSETS_CONTAINER,
    DATA_CONTAINER,
    DEFAULT_DATASTORE,
    REGISTRY_CONTAINER,
    STATE_CONTAINER,
)
from shared.names import check_relative_path

# Datastore names a job may use, and the container each one maps to.
DATASTORES = {DEFAULT_DATASTORE: DATA_CONTAINER}
# Internal containers hold records, code and job state: never a job's input or output.
_PRIVATE_CONTAINERS = frozenset({REGISTRY_CONTAINER, ASSETS_CONTAINER, STATE_CONTAINER})
_DATASTORE_URI = re.compile(
    r"azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/"
    r"(?:providers/Microsoft\.MachineLearningServices/)?workspaces/[^/]+/)?"
    r"datastores/(?P<store>[^/]+)/paths/?(?P<path>.*)"
)
_CONTAINER_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")


def resolve_location(uri: object, account_blob_url: str, *, field: str) -> BlobLocation:
    """Turn a storage URL or `azureml://datastores/<name>/paths/<path>` into a location.

    `account_blob_url` is the app's blob endpoint (e.g. `https://acct.blob.core.windows.net/`
    or Azurite's `http://127.0.0.1:10000/devstoreaccount1/`); any other host is refused.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise _bad(field, uri, "a storage URL or an azureml://datastores/<name>/paths/<path> URI")
    uri = uri.strip()
    match = _DATASTORE_URI.fullmatch(uri)
    if match:
        store = match.group("store")
        if store not in DATASTORES:
            raise InvalidRequest(
                f"{field}: unknown datastore {store!r}; configured datastores: "
                + ", ".join(sorted(DATASTORES)),
                details={"field": field, "value": uri}, code="invalid_location",
            )
        return BlobLocation(DATASTORES[store], _clean_path(match.group("path"), field, uri))
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("http", "https"):
        return _from_url(uri, account_blob_url, field)
    if scheme == "azureml":
        raise _bad(field, uri, "azureml://datastores/<name>/paths/<path> (data assets are not "
                               "supported)")
    raise _bad(field, uri, "a storage URL of the app's account or an azureml://datastores/... "
                           "path (the CLI and client upload local paths first)")


def _from_url(uri: str, account_blob_url: str, field: str) -> BlobLocation:
    given = urlsplit(uri)
    account = urlsplit(account_blob_url)
    base = account.path.rstrip("/")
    same_host = (given.scheme.lower(), given.netloc.lower()) == (
        account.scheme.lower(), account.netloc.lower())
    if not same_host or not (given.path == base or given.path.startswith(base + "/")):
        raise InvalidRequest(
            f"{field}: {uri!r} is outside the configured storage account; use a URL under "
            f"{account_blob_url.rstrip('/')}/ or a datastore path",
            details={"field": field, "value": uri}, code="input_outside_account",
        )
    if given.query or given.fragment:
        raise _bad(field, uri, "a URL without query string (no SAS tokens: the app uses its own "
                               "identity)")
    rest = unquote(given.path[len(base):]).strip("/")
    container, _, path = rest.partition("/")
    return BlobLocation(_check_container(container, field, uri), _clean_path(path, field, uri))


def _check_container(container: str, field: str, uri: str) -> str:
    if not _CONTAINER_NAME.fullmatch(container or ""):
        raise _bad(field, uri, "a URL naming a container: <account URL>/<container>/<path>")
    if container in _PRIVATE_CONTAINERS:
        raise InvalidRequest(
            f"{field}: container {container!r} is internal to batchfn and cannot be used",
            details={"field": field, "value": uri}, code="invalid_location",
        )
    return container


def _clean_path(path: str, field: str, uri: str) -> str:
    path = path.strip("/")
    if path:
        try:
            check_relative_path(path, field=field)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, details={"field": field, "value": uri},
                                 code="invalid_location") from None
    return path


def _bad(field: str, value: object, expected: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {value!r} is not valid: expected {expected}",
                          details={"field": field, "value": value}, code="invalid_location")
