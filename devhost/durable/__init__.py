"""Durable Functions for devhost: orchestrations replayed through the SDK's own handle,
history and work kept in the task hub's storage (see docs/devhost-durable.md)."""

from devhost.durable.runtime import DurableRuntime

__all__ = ["DurableRuntime"]
