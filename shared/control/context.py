"""The control app's process-wide objects, built from the app settings once per process."""

from __future__ import annotations

from functools import cache

from azure.storage.queue import QueueClient

from shared.control.event_sinks import EventSink, default_sink
from shared.control.job_service import JobService
from shared.control.recovery import RecoverySettings
from shared.control.registry import Registry
from shared.storage.account import default_account
from shared.storage.job_store import JobStore
from shared.storage.queue_clients import minibatch_queue


@cache
def job_store() -> JobStore:
    """The job records and job state of the app's storage account."""
    return JobStore(default_account())


@cache
def scoring_queue() -> QueueClient:
    """The queue of mini-batch messages (the planner's and the monitor's)."""
    return minibatch_queue(default_account())


@cache
def recovery_settings() -> RecoverySettings:
    """How the job monitor re-sends stalled and slow mini-batches (app settings)."""
    return RecoverySettings.from_environment()


@cache
def registry() -> Registry:
    """Endpoints, deployments and assets of the app's storage account."""
    return Registry(default_account())


@cache
def job_service() -> JobService:
    """The job operations of the HTTP API and blob drop."""
    return JobService(job_store(), registry())


@cache
def event_sink() -> EventSink:
    """Where jobs' lifecycle events go: the Event Grid topic, else the events queue."""
    return default_sink(default_account())
