"""The registry: endpoints and deployments stored as JSON blobs.

Layout in the registry container: `endpoints/<endpoint>.json` and
`deployments/<endpoint>/<deployment>.json` (assets: see shared/assets.py). Creates are
create-only writes, so of two concurrent creates of one name one wins and the other gets
Conflict; updates are conditional on the blob's ETag and retried on a lost race. Every
check happens before the first write, so a refused request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.assets import AssetStore
from shared.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    split_settings,
    string_map,
    text_field,
)
from shared.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from shared.layout import REGISTRY_CONTAINER
from shared.mlflow_scoring.mlmodel import MAX_MLMODEL_BYTES, MLMODEL_FILE, parse_mlmodel
from shared.names import check_resource_name
from shared.records import AssetRef, DeploymentRecord, EndpointRecord
from shared.script_check import check_scoring_script
from shared.storage import StorageAccount

DEPLOYMENT_UPDATABLE = frozenset({"description", "tags", "settings", "resources",
                                  "environment_variables"})
ENDPOINT_UPDATABLE = frozenset({"description", "tags", "defaults"})
_RACE_RETRIES = 10


class Registry:
    """Endpoint and deployment records, and the assets deployments pin."""

    def __init__(self, account: StorageAccount) -> None:
        self._container = account.blob_service().get_container_client(REGISTRY_CONTAINER)
        self.assets = AssetStore(account)
        self._container_ready = False

    # ----- endpoints -------------------------------------------------------------------

    def get_endpoint(self, name: str) -> EndpointRecord:
        """The endpoint `name`; NotFound if there is none."""
        check_resource_name("endpoint", name)
        found = self._read(_endpoint_blob(name))
        if found is None:
            raise NotFound(f"endpoint {name!r} does not exist", details={"endpoint": name},
                           code="endpoint_not_found")
        return EndpointRecord.from_dict(found[0])

    def list_endpoints(self) -> list[EndpointRecord]:
        """All endpoints, by name."""
        return [EndpointRecord.from_dict(data) for data in self._read_all("endpoints/")]

    def create_endpoint(self, spec: EndpointSpec) -> EndpointRecord:
        """Create a new endpoint; Conflict if the name is taken."""
        if spec.default_deployment is not None:
            raise InvalidRequest(
                f"defaults.deployment_name {spec.default_deployment!r} names a deployment that "
                "does not exist yet: create the endpoint, then the deployment with --set-default",
                details={"field": "defaults.deployment_name"}, code="unknown_deployment")
        now = _now()
        record = EndpointRecord(name=spec.name, description=spec.description, tags=spec.tags,
                                created_at=now, updated_at=now)
        self._create(_endpoint_blob(spec.name), record.to_dict(),
                     f"endpoint {spec.name!r} already exists: use update to change it")
        return record

    def put_endpoint(self, spec: EndpointSpec) -> tuple[EndpointRecord, bool]:
        """Create the endpoint or replace its description, tags and default; (record, created)."""
        for _ in range(_RACE_RETRIES):
            found = self._read(_endpoint_blob(spec.name))
            if found is None:
                try:
                    return self.create_endpoint(spec), True
                except Conflict:
                    continue
            changes: dict[str, Any] = {"description": spec.description, "tags": spec.tags}
            if spec.default_deployment is not None:
                changes["defaults"] = {"deployment_name": spec.default_deployment}
            return self.update_endpoint(spec.name, changes), False
        raise Conflict(f"endpoint {spec.name!r} changed concurrently; try again", code="busy")

    def update_endpoint(self, name: str, changes: Mapping[str, Any]) -> EndpointRecord:
        """Apply `description`, `tags` and/or `defaults.deployment_name` to an endpoint."""
        unknown = sorted(set(changes) - ENDPOINT_UPDATABLE)
        if unknown:
            raise InvalidRequest(f"cannot update {', '.join(unknown)} of an endpoint; updatable: "
                                 f"{', '.join(sorted(ENDPOINT_UPDATABLE))}",
                                 code="invalid_update")
        patch = EndpointSpec.from_document({**changes, "name": name})
        set_default = "defaults" in changes and "deployment_name" in (changes["defaults"] or {})
        if set_default and patch.default_deployment is not None:
            self._require_deployment(name, patch.default_deployment)

        def apply(record: EndpointRecord) -> EndpointRecord:
            updated = record
            if "description" in changes:
                updated = replace(updated, description=patch.description)
            if "tags" in changes:
                updated = replace(updated, tags=patch.tags)
            if set_default:
                updated = replace(updated, default_deployment=patch.default_deployment)
            return updated

        return self._modify_endpoint(name, apply)

    def delete_endpoint(self, name: str) -> list[str]:
        """Delete an endpoint and its deployments (jobs are kept); returns deleted deployments."""
        self.get_endpoint(name)
        deleted = []
        for deployment in self.list_deployments(name):
            self._delete(_deployment_blob(name, deployment.name))
            deleted.append(deployment.name)
        self._delete(_endpoint_blob(name))
        return deleted

    # ----- deployments -----------------------------------------------------------------

    def get_deployment(self, endpoint: str, name: str) -> DeploymentRecord:
        """The deployment `name` of `endpoint`; NotFound if either is missing."""
        check_resource_name("endpoint", endpoint)
        check_resource_name("deployment", name)
        found = self._read(_deployment_blob(endpoint, name))
        if found is None:
            self.get_endpoint(endpoint)
            raise NotFound(f"deployment {name!r} does not exist on endpoint {endpoint!r}",
                           details={"endpoint": endpoint, "deployment": name},
                           code="deployment_not_found")
        return DeploymentRecord.from_dict(found[0])

    def list_deployments(self, endpoint: str) -> list[DeploymentRecord]:
        """All deployments of an existing endpoint, by name."""
        self.get_endpoint(endpoint)
        return [DeploymentRecord.from_dict(data)
                for data in self._read_all(f"deployments/{endpoint}/")]

    def resolve_deployment(self, endpoint: str, name: str | None) -> DeploymentRecord:
        """The deployment a job runs on: `name`, or the endpoint's default when None."""
        if name is not None:
            return self.get_deployment(endpoint, name)
        record = self.get_endpoint(endpoint)
        if record.default_deployment is None:
            raise InvalidRequest(
                f"endpoint {endpoint!r} has no default deployment: name one (--deployment-name) "
                "or set the default (batch-endpoint update --set defaults.deployment_name=D)",
                details={"endpoint": endpoint}, code="no_default_deployment")
        return self.get_deployment(endpoint, record.default_deployment)

    def create_deployment(self, spec: DeploymentSpec, *, set_default: bool = False,
                          replace_existing: bool = False) -> tuple[DeploymentRecord, bool]:
        """Create (or, with `replace_existing`, replace) a deployment; (record, created).

        Its model and code must be registered assets; the scoring script is checked here.
        The endpoint's first deployment becomes its default, as does one created with
        `set_default`.
        """
        endpoint = self.get_endpoint(spec.endpoint_name)
        model = self._resolve_asset("model", spec.model)
        code = None
        if spec.code is None:
            self._check_mlflow_model(model)
        else:
            code = self._resolve_asset("code", spec.code)
            assert spec.scoring_script is not None  # the spec gives both or neither
            source = self.assets.read_file(code, spec.scoring_script)
            check_scoring_script(source, spec.scoring_script)
        now = _now()
        record = DeploymentRecord(
            name=spec.name, endpoint_name=spec.endpoint_name, model=model, code=code,
            scoring_script=spec.scoring_script, settings=spec.settings,
            description=spec.description, tags=spec.tags,
            environment_variables=spec.environment_variables, created_at=now, updated_at=now)
        blob = _deployment_blob(spec.endpoint_name, spec.name)
        created = True
        if replace_existing:
            found = self._read(blob)
            if found is not None:
                created = False
                record = replace(record, created_at=found[0].get("created_at", now))
                self._write(blob, record.to_dict(), etag=found[1])
        if created:
            self._create(blob, record.to_dict(),
                         f"deployment {spec.name!r} already exists on endpoint "
                         f"{spec.endpoint_name!r}: use update to change it")
        if set_default or endpoint.default_deployment is None:
            self._modify_endpoint(
                spec.endpoint_name,
                lambda current: current if (not set_default and current.default_deployment)
                else replace(current, default_deployment=spec.name))
        return record, created

    def update_deployment(self, endpoint: str, name: str,
                          changes: Mapping[str, Any]) -> DeploymentRecord:
        """Change settings, resources, environment variables, description or tags."""
        unknown = sorted(set(changes) - DEPLOYMENT_UPDATABLE)
        if unknown:
            raise InvalidRequest(
                f"cannot update {', '.join(unknown)} of a deployment (model and code are pinned "
                f"at create: create a new deployment); updatable: "
                f"{', '.join(sorted(DEPLOYMENT_UPDATABLE))}", code="invalid_update")
        for _ in range(_RACE_RETRIES):
            found = self._read(_deployment_blob(endpoint, name))
            if found is None:
                self.get_deployment(endpoint, name)  # raises the precise NotFound
                continue  # it appeared between the two reads
            data, etag = found
            current = DeploymentRecord.from_dict(data)
            overrides, environment = split_settings(
                {key: changes[key] for key in ("settings", "resources", "environment_variables")
                 if key in changes})
            sets_environment = "environment_variables" in changes or "environment_variables" in (
                _as_mapping(changes.get("settings"), "settings"))
            updated = replace(
                current,
                settings=current.settings.with_overrides(overrides, per_job=False),
                description=(text_field(changes["description"], "description")
                             if "description" in changes else current.description),
                tags=(string_map(changes["tags"], "tags")
                      if "tags" in changes else current.tags),
                environment_variables=(environment if sets_environment
                                       else current.environment_variables),
                updated_at=_now(),
            )
            try:
                self._write(_deployment_blob(endpoint, name), updated.to_dict(), etag=etag)
            except ResourceModifiedError:
                continue
            return updated
        raise Conflict(f"deployment {name!r} changed concurrently; try again", code="busy")

    def delete_deployment(self, endpoint: str, name: str, *, force: bool = False) -> None:
        """Delete a deployment; refuses the default of an endpoint with others unless forced."""
        self.get_deployment(endpoint, name)
        record = self.get_endpoint(endpoint)
        if record.default_deployment == name:
            others = [d.name for d in self.list_deployments(endpoint) if d.name != name]
            if others and not force:
                raise Conflict(
                    f"deployment {name!r} is the default of endpoint {endpoint!r}, which has "
                    f"other deployments ({', '.join(others)}): switch the default first "
                    f"(batch-endpoint update --name {endpoint} --set "
                    f"defaults.deployment_name={others[0]}) or force the delete",
                    details={"endpoint": endpoint, "deployment": name, "others": others},
                    code="deployment_is_default")
        self._delete(_deployment_blob(endpoint, name))
        if record.default_deployment == name:
            self._modify_endpoint(
                endpoint,
                lambda current: replace(current, default_deployment=None)
                if current.default_deployment == name else current)

    # ----- storage helpers -------------------------------------------------------------

    def _resolve_asset(self, kind: str, source: Any) -> AssetRef:
        if not isinstance(source, AssetReference):
            raise InvalidRequest(
                f"{kind} is a local folder ({source.path!r}): the API takes registered assets "
                f"(azureml:<name>:<version>); the CLI and client upload folders first",
                details={"field": kind}, code="local_path_not_allowed")
        return self.assets.get(kind, source.name, source.version)

    def _check_mlflow_model(self, model: AssetRef) -> None:
        """A deployment without code_configuration: its model must be an MLflow model that
        the built-in scorer loads (an MLmodel file with the python_function flavor)."""
        try:
            text = self.assets.read_file(model, MLMODEL_FILE, MAX_MLMODEL_BYTES)
        except NotFound:
            raise Unprocessable(
                f"the deployment has no code_configuration, and model {model.ref} is not an "
                f"MLflow model (no {MLMODEL_FILE} file at the top of its folder {model.root}/): "
                "give code_configuration (code and scoring_script), or deploy an MLflow model",
                details={"field": "code_configuration", "model": model.ref},
                code="scoring_script_required") from None
        parse_mlmodel(text, f"{model.root}/{MLMODEL_FILE} of model {model.ref}")

    def _require_deployment(self, endpoint: str, name: str) -> None:
        if self._read(_deployment_blob(endpoint, name)) is None:
            self.get_endpoint(endpoint)
            raise InvalidRequest(
                f"cannot make {name!r} the default of endpoint {endpoint!r}: no such deployment",
                details={"endpoint": endpoint, "deployment": name}, code="unknown_deployment")

    def _modify_endpoint(self, name: str, change) -> EndpointRecord:  # noqa: ANN001
        for _ in range(_RACE_RETRIES):
            found = self._read(_endpoint_blob(name))
            if found is None:
                self.get_endpoint(name)  # raises NotFound
                continue  # it appeared between the two reads
            data, etag = found
            current = EndpointRecord.from_dict(data)
            updated = change(current)
            if updated == current:
                return current
            updated = replace(updated, updated_at=_now())
            try:
                self._write(_endpoint_blob(name), updated.to_dict(), etag=etag)
            except ResourceModifiedError:
                continue
            return updated
        raise Conflict(f"endpoint {name!r} changed concurrently; try again", code="busy")

    def _read(self, blob: str) -> tuple[dict[str, Any], str] | None:
        try:
            downloader = self._container.download_blob(blob)
            return json.loads(downloader.readall()), downloader.properties.etag
        except ResourceNotFoundError:
            return None

    def _read_all(self, prefix: str) -> list[dict[str, Any]]:
        try:
            names = sorted(self._container.list_blob_names(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []
        items = []
        for blob in names:
            if "/" in blob[len(prefix):]:
                continue
            found = self._read(blob)
            if found is not None:  # deleted between list and read
                items.append(found[0])
        return items

    def _create(self, blob: str, data: dict[str, Any], conflict_message: str) -> None:
        self._ensure_container()
        try:
            self._container.upload_blob(blob, json.dumps(data), overwrite=False)
        except ResourceExistsError:
            raise Conflict(conflict_message, code="already_exists") from None

    def _write(self, blob: str, data: dict[str, Any], *, etag: str) -> None:
        self._container.upload_blob(blob, json.dumps(data), overwrite=True, etag=etag,
                                    match_condition=MatchConditions.IfNotModified)

    def _delete(self, blob: str) -> None:
        try:
            self._container.delete_blob(blob)
        except ResourceNotFoundError:
            pass

    def _ensure_container(self) -> None:
        if not self._container_ready:
            try:
                self._container.create_container()
            except ResourceExistsError:
                pass
            self._container_ready = True


def _endpoint_blob(name: str) -> str:
    return f"endpoints/{name}.json"


def _deployment_blob(endpoint: str, name: str) -> str:
    return f"deployments/{endpoint}/{name}.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a mapping", details={"field": what},
                             code="invalid_update")
    return value
