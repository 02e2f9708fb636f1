"""Where a job's lifecycle events go: an Event Grid custom topic in Azure, else the storage
queue `batchfn-events` (layout.EVENTS_QUEUE).

The control app setting BATCHFN_EVENTGRID_ENDPOINT (the topic's https endpoint, which the
infra stacks set) picks Event Grid; the app's identity needs the EventGrid Data Sender role
on the topic. Both sinks fail fast (a couple of short retries): publication never holds a
job up, and what was not delivered is retried from the job's event log
(control/lifecycle.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.contract.layout import EVENTS_QUEUE
from shared.contract.lifecycle_events import JobEvent
from shared.storage.account import StorageAccount

EVENTGRID_ENDPOINT_SETTING = "BATCHFN_EVENTGRID_ENDPOINT"
EVENTGRID_SCOPE = "https://eventgrid.azure.net/.default"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
SEND_TIMEOUT_SECONDS = 10
MAX_EVENTGRID_URL = 2048


class EventSink(Protocol):
    """Takes a job's events in order; raises when they could not all be delivered."""

    def publish(self, events: Sequence[JobEvent]) -> None: ...


class QueueEventSink:
    """One base64 message per event on the storage queue `batchfn-events` (what a
    Functions queue trigger, or any storage-queue reader, decodes)."""

    def __init__(self, account: StorageAccount, name: str = EVENTS_QUEUE) -> None:
        # Few, quick retries: an outage leaves the events in the job's log for later.
        self.queue: QueueClient = account.queue_service(retry_total=1).get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy())

    def publish(self, events: Sequence[JobEvent]) -> None:
        for event in events:
            text = json.dumps(event.to_dict(), separators=(",", ":"))
            try:
                self.queue.send_message(text, timeout=SEND_TIMEOUT_SECONDS)
            except ResourceNotFoundError:
                try:
                    self.queue.create_queue()
                except ResourceExistsError:
                    pass
                self.queue.send_message(text, timeout=SEND_TIMEOUT_SECONDS)


class EventGridSink:
    """CloudEvents batches POSTed to an Event Grid custom topic with an Entra ID token."""

    def __init__(self, endpoint: str, credential,  # noqa: ANN001 - a TokenCredential
                 ca_bundle: str | None = None) -> None:
        """`ca_bundle`: a CA certificate file to trust instead of the system's (a topic
        behind a private certificate authority)."""
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import (
            BearerTokenCredentialPolicy,
            HeadersPolicy,
            RetryPolicy,
        )

        self.endpoint = check_eventgrid_endpoint(endpoint)
        self._verify: bool | str = ca_bundle or True
        self._client = PipelineClient(self.endpoint, policies=[
            HeadersPolicy(),
            RetryPolicy(retry_total=2, retry_backoff_factor=0.5,
                        timeout=SEND_TIMEOUT_SECONDS * 3),
            BearerTokenCredentialPolicy(credential, EVENTGRID_SCOPE),
        ])

    def publish(self, events: Sequence[JobEvent]) -> None:
        from azure.core.rest import HttpRequest

        if not events:
            return
        request = HttpRequest("POST", self.endpoint, content=batch_body(events),
                              headers={"Content-Type": BATCH_CONTENT_TYPE})
        response = self._client.send_request(request, connection_timeout=SEND_TIMEOUT_SECONDS,
                                             read_timeout=SEND_TIMEOUT_SECONDS,
                                             connection_verify=self._verify)
        response.raise_for_status()


def batch_body(events: Sequence[JobEvent]) -> bytes:
    """A CloudEvents JSON batch (an array of structured events), as Event Grid takes it."""
    return json.dumps([event.to_dict() for event in events], separators=(",", ":")).encode()


def check_eventgrid_endpoint(endpoint: str) -> str:
    """The topic endpoint if it is an https URL with a host; ValueError otherwise."""
    parts = urlsplit(endpoint.strip())
    if (len(endpoint) > MAX_EVENTGRID_URL or parts.scheme != "https" or not parts.hostname
            or parts.username or parts.password or parts.query or parts.fragment):
        raise ValueError(f"{EVENTGRID_ENDPOINT_SETTING} must be an Event Grid topic's https "
                         "endpoint without credentials or query (https://<topic>.<region>-1"
                         ".eventgrid.azure.net/api/events)")
    return endpoint.strip()


def default_sink(account: StorageAccount) -> EventSink:
    """The app's sink: the Event Grid topic of BATCHFN_EVENTGRID_ENDPOINT, else the queue."""
    endpoint = os.environ.get(EVENTGRID_ENDPOINT_SETTING, "").strip()
    if endpoint:
        return EventGridSink(endpoint, account.credential)
    return QueueEventSink(account)
