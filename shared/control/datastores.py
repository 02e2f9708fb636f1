"""Where a job may read and write: an allow-list, checked on every input and output.

A job's input comes only from a datastore: the default one (`workspaceblobstore`, the
container batchfn-data) or one an operator configures with the app setting
BATCHFN_DATASTORES (`name=container,name=container`). Its output goes only to its own
folder of the jobs container (`batchfn-jobs/<job id>/`, the default), to a datastore, or —
for a blob-drop job — to the `_output/` folder beside its drop. Nothing else is reachable
through a job: not the Functions host's containers (keys, receipts), the Durable task
hub's, the deployment package, batchfn's registry, assets and job state, other jobs'
outputs, or the drop container itself (a job cannot start jobs).

A location is a storage URL of the app's own account or an
`azureml://datastores/<name>/paths/<path>` URI. URLs are decoded once, then the container
must be one of the allowed ones, spelled exactly (storage names are lower case) and the
path a plain relative path (no `..`, `.`, backslashes, empty segments or control
characters), so no spelling (percent-encoding, case, trailing dots, `..`) reaches
another container. Registered data assets' files (`assets/` of the default datastore) are
read by jobs, never written.

An operator may also give input URLs of elsewhere a meaning here with the app setting
BATCHFN_INPUT_ALIASES: `<URL prefix>=<target>` pairs separated by `;`, the target a
datastore path (`azureml://datastores/<name>/paths/<path>`; the rest of the URL is appended)
or a data asset (`azureml:<name>@latest`, for that URL exactly). Scripts written for a
public URL (Azure ML's tutorials read https://azuremlexampledata.blob.core.windows.net/...)
then score a copy kept in a datastore, and the allow-list still decides what is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.contract.asset_spec import data_reference
from shared.contract.errors import InvalidRequest
from shared.contract.job_records import BlobLocation
from shared.contract.layout import (
    DATA_ASSETS_PREFIX,
    DATA_CONTAINER,
    DEFAULT_DATASTORE,
    DROP_CONTAINER,
    JOBS_CONTAINER,
    OUTPUT_FOLDER,
)
from shared.contract.names import relative_path_problem, shown

DATASTORES_SETTING = "BATCHFN_DATASTORES"
ALIASES_SETTING = "BATCHFN_INPUT_ALIASES"
MAX_URI_LENGTH = 2048
MAX_ALIASES = 100
_DATASTORE_URI = re.compile(
    r"azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/"
    r"(?:providers/Microsoft\.MachineLearningServices/)?workspaces/[^/]+/)?"
    r"datastores/(?P<store>[^/]+)/paths/?(?P<path>.*)", re.S)
_CONTAINER_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_DATASTORE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,254}")
# Containers of the host, the task hub ("batchfn" in host.json), the deployment and
# batchfn itself: never a datastore, whatever the setting says.
_RESERVED_PREFIXES = ("azure-webjobs-", "batchfn-", "app-package-", "scm-")
_RESERVED_EXCEPTIONS = frozenset({DATA_CONTAINER})


class DatastoreSettingError(ValueError):
    """BATCHFN_DATASTORES is malformed or names a container batchfn keeps for itself."""


@dataclass(frozen=True)
class Datastore:
    """A named container of the app's account that jobs may read from and write to."""

    name: str
    container: str

    def to_dict(self, account_url: str) -> dict[str, Any]:
        return {"name": self.name, "container": self.container,
                "default": self.name == DEFAULT_DATASTORE,
                "uri": f"azureml://datastores/{self.name}/paths/",
                "url": f"{account_url.rstrip('/')}/{self.container}/"}


@dataclass(frozen=True)
class InputAlias:
    """An input URL prefix that stands for a datastore path or a data asset."""

    url: str  # scheme://host/path, without a trailing '/'
    target: str

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url, "target": self.target}


@dataclass(frozen=True)
class StorageBoundaries:
    """The datastores of this app, and the checks of a job's input and output."""

    datastores: tuple[Datastore, ...] = (Datastore(DEFAULT_DATASTORE, DATA_CONTAINER),)
    aliases: tuple[InputAlias, ...] = ()

    @classmethod
    def from_settings(cls, env: Mapping[str, str] | None = None) -> StorageBoundaries:
        """The default datastore plus those BATCHFN_DATASTORES configures, and the input
        aliases of BATCHFN_INPUT_ALIASES."""
        env = os.environ if env is None else env
        stores = (Datastore(DEFAULT_DATASTORE, DATA_CONTAINER),
                  *parse_datastores(env.get(DATASTORES_SETTING, "")))
        return cls(datastores=stores,
                   aliases=parse_aliases(env.get(ALIASES_SETTING, ""),
                                         {store.name for store in stores}))

    def unalias(self, uri: Any) -> str | None:
        """What an input URL stands for when an alias covers it (a datastore path or a data
        asset reference); None when none does."""
        if not isinstance(uri, str) or "://" not in uri or len(uri) > MAX_URI_LENGTH:
            return None
        given = uri.strip().rstrip("/")
        for alias in self.aliases:
            rest = _under(given, alias.url)
            if rest is None:
                continue
            if not alias.target.startswith("azureml://"):
                if rest:
                    raise InvalidRequest(
                        f"input {shown(uri)}: {alias.url} stands for the data asset "
                        f"{alias.target}: invoke that URL itself, not a path under it",
                        details={"field": "input", "value": shown(uri)},
                        code="invalid_location")
                return alias.target
            return f"{alias.target.rstrip('/')}/{unquote(rest)}" if rest else alias.target
        return None

    def datastore(self, name: str) -> Datastore | None:
        return next((store for store in self.datastores if store.name == name), None)

    @property
    def containers(self) -> frozenset[str]:
        return frozenset(store.container for store in self.datastores)

    def resolve_input(self, uri: Any, account_url: str, *, field: str = "input",
                      drop_folder: BlobLocation | None = None) -> BlobLocation:
        """Where an input is, if a job may read it (a datastore; a drop job: its folder)."""
        location = self._parse(uri, account_url, field)
        if location.container in self.containers or location == drop_folder:
            return location
        raise self._refused(field, uri, location, "inputs come only from datastores")

    def resolve_output(self, uri: Any, account_url: str, *, job_id: str,
                       field: str = "output_path",
                       drop_folder: BlobLocation | None = None) -> BlobLocation:
        """Where an output goes, if a job may write there: its own folder of the jobs
        container, a datastore, or (a drop job) the `_output/` folder beside its drop."""
        location = self._parse(uri, account_url, field)
        if location.container == DATA_CONTAINER and _within(location.path,
                                                            DATA_ASSETS_PREFIX.rstrip("/")):
            raise self._refused(field, uri, location,
                                f"{DATA_ASSETS_PREFIX} of {DEFAULT_DATASTORE} holds registered "
                                "data assets, which never change")
        if location.container in self.containers:
            return location
        if location.container == JOBS_CONTAINER and _within(location.path, job_id):
            return location
        if drop_folder is not None and location.container == DROP_CONTAINER and _within(
                location.path, f"{drop_folder.path}/{OUTPUT_FOLDER}"):
            return location
        raise self._refused(field, uri, location,
                            f"outputs go only to the job's folder of {JOBS_CONTAINER} (the "
                            "default) or to a datastore")

    def describe(self, account_url: str) -> dict[str, Any]:
        """The allowed locations, as GET /api/datastores lists them."""
        return {
            "value": [store.to_dict(account_url) for store in self.datastores],
            "inputs": "datastores",
            "outputs": {"default": f"{account_url.rstrip('/')}/{JOBS_CONTAINER}/<job name>/",
                        "allowed": "the job's own folder of the jobs container, or a datastore",
                        "blob_drop": f"{DROP_CONTAINER}/<endpoint>/<folder>/{OUTPUT_FOLDER}/"},
            "aliases": [alias.to_dict() for alias in self.aliases],
        }

    # ----- parsing -------------------------------------------------------------------------

    def _parse(self, uri: Any, account_url: str, field: str) -> BlobLocation:
        if not isinstance(uri, str) or not uri.strip() or len(uri) > MAX_URI_LENGTH:
            raise _bad(field, uri, "a storage URL or an azureml://datastores/<name>/paths/<path> "
                                   f"URI of at most {MAX_URI_LENGTH} characters")
        uri = uri.strip()
        match = _DATASTORE_URI.fullmatch(uri)
        if match:
            store = self.datastore(match.group("store"))
            if store is None:
                raise InvalidRequest(
                    f"{field}: unknown datastore {shown(match.group('store'))}; datastores: "
                    + ", ".join(s.name for s in self.datastores) + " (GET /api/datastores)",
                    details={"field": field, "value": shown(uri)}, code="unknown_datastore")
            return BlobLocation(store.container, _clean_path(match.group("path"), field, uri))
        scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
        if scheme in ("http", "https"):
            return _from_url(uri, account_url, field)
        if scheme == "azureml":
            raise _bad(field, uri, "azureml://datastores/<name>/paths/<path> or a data asset, "
                                   "azureml:<name>@latest or azureml:<name>:<version>")
        raise _bad(field, uri, "a storage URL of the app's account or an azureml://datastores/"
                               "... path (the CLI and client upload local paths first)")

    def _refused(self, field: str, uri: Any, location: BlobLocation,
                 rule: str) -> InvalidRequest:
        return InvalidRequest(
            f"{field}: container {location.container!r} is not allowed: {rule}; datastores: "
            + ", ".join(f"{s.name} ({s.container})" for s in self.datastores)
            + " (GET /api/datastores)",
            details={"field": field, "value": shown(uri)}, code="location_not_allowed")


def parse_datastores(text: str) -> tuple[Datastore, ...]:
    """Datastores from BATCHFN_DATASTORES: `name=container` pairs separated by commas."""
    stores: list[Datastore] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, separator, container = (side.strip() for side in item.partition("="))
        if not separator or not _DATASTORE_NAME.fullmatch(name) or not _CONTAINER_NAME.fullmatch(
                container):
            raise DatastoreSettingError(
                f"{DATASTORES_SETTING}: {item[:100]!r} is not name=container (a name of "
                "letters, digits and '_' starting with a letter; a storage container name)")
        if container.startswith(_RESERVED_PREFIXES) and container not in _RESERVED_EXCEPTIONS:
            raise DatastoreSettingError(
                f"{DATASTORES_SETTING}: container {container!r} is batchfn's or the Functions "
                f"host's own ({', '.join(p + '*' for p in _RESERVED_PREFIXES)}); a datastore "
                "needs a container of its own")
        if name == DEFAULT_DATASTORE or any(s.name == name for s in stores):
            raise DatastoreSettingError(f"{DATASTORES_SETTING}: datastore {name!r} is named "
                                        "twice (workspaceblobstore is built in)")
        stores.append(Datastore(name, container))
    return tuple(stores)


def parse_aliases(text: str, datastores: set[str]) -> tuple[InputAlias, ...]:
    """Input aliases from BATCHFN_INPUT_ALIASES: `<URL prefix>=<target>` pairs separated
    by ';'. The target: a datastore path of one of `datastores`, or a data asset."""
    aliases: list[InputAlias] = []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        url, separator, target = (side.strip() for side in item.partition("="))
        parts = urlsplit(url)
        good_url = (separator and parts.scheme in ("http", "https") and parts.netloc
                    and not parts.query and not parts.fragment and len(url) <= MAX_URI_LENGTH)
        if not good_url:
            raise DatastoreSettingError(
                f"{ALIASES_SETTING}: {item[:100]!r} is not <URL>=<target> (an http(s) URL "
                "without query, then a datastore path or a data asset reference)")
        store = _DATASTORE_URI.fullmatch(target)
        try:
            good_target = (store.group("store") in datastores if store
                           else data_reference(target) is not None)
        except InvalidRequest:
            good_target = False
        if not good_target:
            raise DatastoreSettingError(
                f"{ALIASES_SETTING}: target {target[:100]!r} of {url[:100]!r} must be "
                "azureml://datastores/<a datastore>/paths/<path> or azureml:<data>@latest")
        aliases.append(InputAlias(url.rstrip("/"), target))
    if len(aliases) > MAX_ALIASES:
        raise DatastoreSettingError(f"{ALIASES_SETTING}: at most {MAX_ALIASES} aliases")
    return tuple(aliases)


def _under(uri: str, prefix: str) -> str | None:
    """The part of `uri` below the URL `prefix` ("" for the prefix itself), or None when
    `uri` is elsewhere. Scheme and host compare without case, the path with it."""
    given, base = urlsplit(uri), urlsplit(prefix)
    if (given.scheme.lower(), given.netloc.lower()) != (base.scheme.lower(),
                                                        base.netloc.lower()):
        return None
    if given.query or given.fragment:
        return None
    if given.path == base.path:
        return ""
    if given.path.startswith(base.path + "/"):
        return given.path[len(base.path) + 1:]
    return None


def _from_url(uri: str, account_blob_url: str, field: str) -> BlobLocation:
    given = urlsplit(uri)
    account = urlsplit(account_blob_url)
    base = account.path.rstrip("/")
    same_host = (given.scheme.lower(), given.netloc.lower()) == (
        account.scheme.lower(), account.netloc.lower())
    if not same_host or not (given.path == base or given.path.startswith(base + "/")):
        raise InvalidRequest(
            f"{field}: {shown(uri)} is outside the configured storage account; use a URL under "
            f"{account_blob_url.rstrip('/')}/ or a datastore path",
            details={"field": field, "value": shown(uri)}, code="input_outside_account")
    if given.query or given.fragment:
        raise _bad(field, uri, "a URL without query string (no SAS tokens: the app uses its own "
                               "identity)")
    rest = unquote(given.path[len(base):]).strip("/")
    container, _, path = rest.partition("/")
    if not _CONTAINER_NAME.fullmatch(container):
        raise _bad(field, uri, "a URL naming a container: <account URL>/<container>/<path>")
    return BlobLocation(container, _clean_path(path, field, uri))


def _clean_path(path: str, field: str, uri: str) -> str:
    path = path.strip("/")
    if path and relative_path_problem(path, allow_dot_ended=False) is not None:
        raise InvalidRequest(
            f"{field}: {shown(uri)} has a path that is not a plain relative path (no '..', "
            "'.', empty or dot-ended segments, backslashes or control characters)",
            details={"field": field, "value": shown(uri)}, code="invalid_location")
    return path


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _bad(field: str, value: Any, expected: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {shown(value)} is not valid: expected {expected}",
                          details={"field": field, "value": shown(value)},
                          code="invalid_location")
