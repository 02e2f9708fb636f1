"""An azure-ai-ml-shaped facade over batchfn, for notebooks written for Azure ML:

    from batchfn.ml import MLClient, Input
    from batchfn.ml.entities import BatchEndpoint, ModelBatchDeployment, ...
    from batchfn.ml.constants import AssetTypes, BatchDeploymentOutputAction

    ml_client = MLClient()  # BATCHFN_URL / BATCHFN_KEY, or the local devhost

Only the imports and the client construction change; the rest of a batch-endpoint
notebook (`ml_client.batch_endpoints.invoke(...)`, `ml_client.jobs.stream(...)`, the
pollers' `.result()`) runs as written.
"""

from __future__ import annotations

from typing import Any

from batchfn.client import BatchfnClient
from batchfn.ml.entities import (
    AmlCompute,
    BatchDeployment,
    BatchEndpoint,
    Data,
    Environment,
    Input,
    Model,
    ModelBatchDeployment,
    Output,
)
from batchfn.ml.environments import EnvironmentOperations
from batchfn.ml.operations import (
    BatchDeploymentOperations,
    BatchEndpointOperations,
    ComputeOperations,
    DataOperations,
    DatastoreOperations,
    JobOperations,
    ModelOperations,
    Poller,
)

__all__ = ["Input", "MLClient", "Output"]


class MLClient:
    """The batchfn at `url` with its function key, as azure-ai-ml's MLClient presents a
    workspace: `batch_endpoints`, `batch_deployments`, `jobs`, `models`, `data`, `compute`,
    `datastores`, `environments`."""

    def __init__(self, url: str | None = None, key: str | None = None, *,
                 timeout: float = 60.0) -> None:
        client = BatchfnClient(url=url, key=key, timeout=timeout)
        self.batch_endpoints = BatchEndpointOperations(client)
        self.batch_deployments = BatchDeploymentOperations(client)
        self.jobs = JobOperations(client)
        self.models = ModelOperations(client)
        self.data = DataOperations(client)
        self.compute = ComputeOperations(client)
        self.datastores = DatastoreOperations()
        self.environments = EnvironmentOperations(client)

    def begin_create_or_update(self, entity: Any) -> Poller[Any]:
        """Create or update a batch endpoint, batch deployment or compute."""
        if isinstance(entity, BatchEndpoint):
            return self.batch_endpoints.begin_create_or_update(entity)
        if isinstance(entity, (ModelBatchDeployment, BatchDeployment)):
            return self.batch_deployments.begin_create_or_update(entity)
        if isinstance(entity, AmlCompute):
            return self.compute.begin_create_or_update(entity)
        raise TypeError(f"begin_create_or_update takes a BatchEndpoint, a batch deployment or "
                        f"an AmlCompute, not {type(entity).__name__}")

    def create_or_update(self, entity: Any) -> Any:
        """Register a model, a data asset or an environment."""
        if isinstance(entity, Model):
            return self.models.create_or_update(entity)
        if isinstance(entity, Data):
            return self.data.create_or_update(entity)
        if isinstance(entity, Environment):
            return self.environments.create_or_update(entity)
        raise TypeError(f"create_or_update takes a Model, a Data or an Environment, not "
                        f"{type(entity).__name__}")
