"""The registry: endpoints and deployments stored as JSON blobs, with the assets
(control.asset_store), environments (control.environments) and computes
(control.computes) deployments use.

Records in the registry container (contract.layout names them), written through
storage.blob_records: creates are create-only, so of two concurrent creates of one name one
wins and the other gets Conflict; updates are conditional on the blob's ETag and retried a
bounded number of times on a lost race. Every check happens before the first write, so a
refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from shared.contract import layout
from shared.contract.deployment_spec import (
    AssetReference,
    DeploymentSpec,
    EndpointSpec,
    split_settings,
    tags_field,
    text_field,
)
from shared.contract.environment_spec import (
    MLFLOW_ENVIRONMENT_FILES,
    EnvironmentSpec,
    mlflow_environment,
)
from shared.contract.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from shared.contract.job_records import JobCompute
from shared.contract.layout import REGISTRY_CONTAINER
from shared.contract.mlmodel import MAX_MLMODEL_BYTES, MLMODEL_FILE, parse_mlmodel
from shared.contract.names import check_resource_name
from shared.contract.registry_records import (
    AssetRef,
    AssetVersion,
    DeploymentRecord,
    EndpointRecord,
    EnvironmentRecord,
)
from shared.contract.script_check import check_scoring_script
from shared.contract.timestamps import utc_now
from shared.control.asset_store import AssetStore
from shared.control.computes import Computes
from shared.control.environments import EnvironmentStore
from shared.storage.account import StorageAccount
from shared.storage.blob_records import BlobRecords

DEPLOYMENT_UPDATABLE = frozenset({"description", "tags", "settings", "resources",
                                  "environment_variables"})
ENDPOINT_UPDATABLE = frozenset({"description", "tags", "defaults"})


class Registry:
    """Endpoint and deployment records, the assets deployments pin and the computes they
    run on."""

    def __init__(self, account: StorageAccount) -> None:
        container = account.blob_service().get_container_client(REGISTRY_CONTAINER)
        self._endpoints = BlobRecords(container, load=EndpointRecord.from_dict,
                                      dump=EndpointRecord.to_dict, what="endpoint")
        self._deployments = BlobRecords(container, load=DeploymentRecord.from_dict,
                                        dump=DeploymentRecord.to_dict, what="deployment")
        self.assets = AssetStore(account)
        self.computes = Computes(container)
        self.environments = EnvironmentStore(account)

    # ----- endpoints -------------------------------------------------------------------

    def get_endpoint(self, name: str) -> EndpointRecord:
        """The endpoint `name`; NotFound if there is none."""
        check_resource_name("endpoint", name)
        record = self._endpoints.read(layout.endpoint_record(name))
        if record is None:
            raise _endpoint_not_found(name)
        return record

    def list_endpoints(self) -> list[EndpointRecord]:
        """All endpoints, by name."""
        return self._endpoints.list(layout.ENDPOINTS_PREFIX)

    def create_endpoint(self, spec: EndpointSpec) -> EndpointRecord:
        """Create a new endpoint; Conflict if the name is taken."""
        if spec.default_deployment is not None:
            raise InvalidRequest(
                f"defaults.deployment_name {spec.default_deployment!r} names a deployment that "
                "does not exist yet: create the endpoint, then the deployment with --set-default",
                details={"field": "defaults.deployment_name"}, code="unknown_deployment")
        now = utc_now()
        record = EndpointRecord(name=spec.name, description=spec.description, tags=spec.tags,
                                created_at=now, updated_at=now)
        if not self._endpoints.create(layout.endpoint_record(spec.name), record):
            raise Conflict(f"endpoint {spec.name!r} already exists: use update to change it",
                           code="already_exists")
        return record

    def put_endpoint(self, spec: EndpointSpec) -> tuple[EndpointRecord, bool]:
        """Create the endpoint or replace its description, tags and default; (record, created)."""
        if spec.default_deployment is not None:
            self._require_deployment(spec.name, spec.default_deployment, creating=True)

        def build(current: EndpointRecord | None) -> EndpointRecord:
            now = utc_now()
            if current is None:
                return EndpointRecord(name=spec.name, description=spec.description,
                                      tags=spec.tags, created_at=now, updated_at=now)
            return replace(current, description=spec.description, tags=spec.tags,
                           default_deployment=spec.default_deployment
                           or current.default_deployment, updated_at=now)

        return self._endpoints.put(layout.endpoint_record(spec.name), build)

    def update_endpoint(self, name: str, changes: Mapping[str, Any]) -> EndpointRecord:
        """Apply `description`, `tags` and/or `defaults.deployment_name` to an endpoint."""
        unknown = sorted(set(changes) - ENDPOINT_UPDATABLE)
        if unknown:
            raise InvalidRequest(f"cannot update {', '.join(unknown)} of an endpoint; updatable: "
                                 f"{', '.join(sorted(ENDPOINT_UPDATABLE))}",
                                 code="invalid_update")
        patch = EndpointSpec.from_document({**changes, "name": name})
        defaults = changes.get("defaults")
        set_default = isinstance(defaults, Mapping) and "deployment_name" in defaults
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
            self._deployments.delete(layout.deployment_record(name, deployment.name))
            deleted.append(deployment.name)
        self._endpoints.delete(layout.endpoint_record(name))
        return deleted

    # ----- deployments -----------------------------------------------------------------

    def get_deployment(self, endpoint: str, name: str) -> DeploymentRecord:
        """The deployment `name` of `endpoint`; NotFound if either is missing."""
        check_resource_name("endpoint", endpoint)
        check_resource_name("deployment", name)
        record = self._deployments.read(layout.deployment_record(endpoint, name))
        if record is None:
            raise self._deployment_not_found(endpoint, name)
        return record

    def list_deployments(self, endpoint: str) -> list[DeploymentRecord]:
        """All deployments of an existing endpoint, by name."""
        self.get_endpoint(endpoint)
        return self._deployments.list(layout.deployments_prefix(endpoint))

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

        Its model and code must be registered assets (`model` pins the version a reference
        like `@latest` resolved to), its compute an existing pool; the scoring script is
        checked here, and its environment resolved (registered first when inline). The
        endpoint's first deployment becomes its default, as does one created with
        `set_default`.
        """
        endpoint = self.get_endpoint(spec.endpoint_name)
        compute = self.computes.require(spec.compute)
        model = self._resolve_asset("model", spec.model)
        code = None
        if spec.code is None:
            self._check_mlflow_model(model)
        else:
            code = self._resolve_asset("code", spec.code)
            assert spec.scoring_script is not None  # the spec gives both or neither
            source = self.assets.read_file(code, spec.scoring_script)
            check_scoring_script(source, spec.scoring_script)
        environment = self._environment(spec, model)
        now = utc_now()
        record = DeploymentRecord(
            name=spec.name, endpoint_name=spec.endpoint_name, model=model, code=code,
            scoring_script=spec.scoring_script, settings=spec.settings,
            description=spec.description, tags=spec.tags,
            environment_variables=spec.environment_variables, created_at=now, updated_at=now,
            environment=environment, compute=compute, model_reference=_reference(spec.model))
        blob = layout.deployment_record(spec.endpoint_name, spec.name)
        if replace_existing:
            record, created = self._deployments.put(
                blob, lambda current: record if current is None
                else replace(record, created_at=current.created_at))
        else:
            created = self._deployments.create(blob, record)
            if not created:
                raise Conflict(f"deployment {spec.name!r} already exists on endpoint "
                               f"{spec.endpoint_name!r}: use update to change it",
                               code="already_exists")
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
        check_resource_name("endpoint", endpoint)
        check_resource_name("deployment", name)
        overrides, environment = split_settings(
            {key: changes[key] for key in ("settings", "resources", "environment_variables")
             if key in changes})
        sets_environment = "environment_variables" in changes or "environment_variables" in (
            _as_mapping(changes.get("settings"), "settings"))
        description = (text_field(changes["description"], "description")
                       if "description" in changes else None)
        tags = tags_field(changes["tags"], "tags") if "tags" in changes else None

        def apply(current: DeploymentRecord) -> DeploymentRecord:
            return replace(
                current,
                settings=current.settings.with_overrides(overrides, per_job=False),
                description=current.description if description is None else description,
                tags=current.tags if tags is None else tags,
                environment_variables=(environment if sets_environment
                                       else current.environment_variables),
                updated_at=utc_now(),
            )

        return self._deployments.update(
            layout.deployment_record(endpoint, name), apply,
            missing=lambda: self._deployment_not_found(endpoint, name))

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
        self._deployments.delete(layout.deployment_record(endpoint, name))
        if record.default_deployment == name:
            self._modify_endpoint(
                endpoint,
                lambda current: replace(current, default_deployment=None)
                if current.default_deployment == name else current)

    def job_compute(self, name: str) -> JobCompute:
        """What a job invoked now takes of its pool `name` (Computes.job_compute)."""
        return self.computes.job_compute(name)

    def deployments_using(self, compute: str) -> list[str]:
        """`<endpoint>/<deployment>` of every deployment on the pool `compute`."""
        return [f"{endpoint.name}/{deployment.name}"
                for endpoint in self.list_endpoints()
                for deployment in self.list_deployments(endpoint.name)
                if deployment.compute == compute]

    # ----- data assets -----------------------------------------------------------------

    def resolve_data(self, name: str, version: str) -> AssetVersion:
        """The data asset version an `azureml:<name>@latest|:<version>` input names."""
        return self.assets.versions.get("data", name, version)

    # ----- helpers ---------------------------------------------------------------------

    def _resolve_asset(self, kind: str, source: Any) -> AssetRef:
        if not isinstance(source, AssetReference):
            raise InvalidRequest(
                f"{kind} is a local folder ({source.path!r}): the API takes registered assets "
                f"(azureml:<name>:<version>); the CLI and client upload folders first",
                details={"field": kind}, code="local_path_not_allowed")
        return self.assets.versions.get(kind, source.name, source.version).content

    def _environment(self, spec: DeploymentSpec, model: AssetRef) -> EnvironmentRecord | None:
        """The environment the deployment's workers run in: a registered one, an inline one
        (registered under its name, else `<endpoint>-<deployment>-env`), an MLflow model's
        own requirements (no code_configuration), or None: the scoring image's packages."""
        source = spec.environment
        if isinstance(source, AssetReference):
            return self.environments.get(source.name, source.version)
        if isinstance(source, EnvironmentSpec):
            name = source.name or f"{spec.endpoint_name}-{spec.name}-env"
            return self.environments.register(name, source)[0]
        if spec.code is not None:
            return None
        files = {}
        for file in MLFLOW_ENVIRONMENT_FILES:
            try:
                files[file] = self.assets.read_file(model, file).decode("utf-8", "replace")
            except NotFound:
                continue
        mlflow_spec = mlflow_environment(files)
        return self.environments.register(f"{model.name}-env", mlflow_spec)[0]

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

    def _require_deployment(self, endpoint: str, name: str, *, creating: bool = False) -> None:
        if self._deployments.read(layout.deployment_record(endpoint, name)) is None:
            if not creating:
                self.get_endpoint(endpoint)
            raise InvalidRequest(
                f"cannot make {name!r} the default of endpoint {endpoint!r}: no such deployment",
                details={"endpoint": endpoint, "deployment": name}, code="unknown_deployment")

    def _deployment_not_found(self, endpoint: str, name: str) -> NotFound:
        if self._endpoints.read(layout.endpoint_record(endpoint)) is None:
            return _endpoint_not_found(endpoint)
        return NotFound(f"deployment {name!r} does not exist on endpoint {endpoint!r}",
                        details={"endpoint": endpoint, "deployment": name},
                        code="deployment_not_found")

    def _modify_endpoint(self, name: str,
                         change: Callable[[EndpointRecord], EndpointRecord]) -> EndpointRecord:
        def stamped(current: EndpointRecord) -> EndpointRecord | None:
            updated = change(current)
            return None if updated == current else replace(updated, updated_at=utc_now())

        return self._endpoints.update(layout.endpoint_record(name), stamped,
                                      missing=lambda: _endpoint_not_found(name))


def _reference(source: Any) -> str | None:
    """How a deployment document named its registered model."""
    if not isinstance(source, AssetReference):
        return None
    if source.version == "latest":
        return f"azureml:{source.name}@latest"
    return f"azureml:{source.name}:{source.version}"


def _endpoint_not_found(name: str) -> NotFound:
    return NotFound(f"endpoint {name!r} does not exist", details={"endpoint": name},
                    code="endpoint_not_found")


def _as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a mapping", details={"field": what},
                             code="invalid_update")
    return value
