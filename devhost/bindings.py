"""Bindings of one function: parameter types, input bindings, `func.Out` values and outputs.

Built once per function at start-up (unsupported bindings fail then, not per call);
per invocation `prepare()` gives the non-trigger arguments and `complete()` writes the
outputs after the function succeeded, as the host does.
"""

from __future__ import annotations

import base64
import collections.abc
import datetime as dt
import json
import logging
import os
import re
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.functions import _queue as func_queue

from devhost.config import ConfigError
from devhost.connections import StorageClients, resolve_connection
from devhost.invoker import Invoker, function_name, user_function

TRIGGER_TYPES = (
    "httpTrigger", "queueTrigger", "blobTrigger",
    "orchestrationTrigger", "activityTrigger", "entityTrigger",
)
_TEMPLATE = re.compile(r"\{([^{}]+)\}")
log = logging.getLogger("devhost.bindings")


class BindingError(RuntimeError):
    """A binding could not be resolved or written for one invocation."""


class OutputValue(func.Out[Any]):
    """The concrete `func.Out` handed to output-binding parameters."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


def raw_bindings(function: Any) -> list[dict[str, Any]]:
    """The function.json-like binding dicts of a registered function."""
    return [json.loads(raw) if isinstance(raw, str) else dict(raw)
            for raw in function.get_raw_bindings()]


def trigger_binding(function: Any) -> dict[str, Any]:
    """The trigger's binding dict; ConfigError if the function has none devhost serves."""
    for binding in raw_bindings(function):
        if binding.get("type") in TRIGGER_TYPES:
            return binding
    kinds = sorted({str(b.get("type")) for b in raw_bindings(function)})
    raise ConfigError(f"function {function_name(function)}: no supported trigger in {kinds}")


def parameter_types(callable_: Callable[..., Any]) -> dict[str, Any]:
    """Parameter annotations, resolving string annotations where possible."""
    try:
        return typing.get_type_hints(callable_)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: fall back to the raw ones
        return dict(getattr(callable_, "__annotations__", {}))


def resolve_template(template: str, data: Mapping[str, Any]) -> str:
    """Fill `{name}` (case-insensitive), `{rand-guid}` and `{DateTime}` in a binding path."""
    lowered = {key.lower(): value for key, value in data.items()}

    def fill(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        if key.lower() == "rand-guid":
            return str(uuid.uuid4())
        if key.lower() == "datetime":
            return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
        if key.lower() not in lowered:
            raise BindingError(f"binding expression '{{{key}}}' has no value in this invocation")
        return str(lowered[key.lower()])

    return _TEMPLATE.sub(fill, template)


_SETTING = re.compile(r"%([^%]+)%")


def expand_settings(text: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as binding properties allow."""

    def setting(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise ConfigError(f"app setting {match.group(1)!r} (used as %{match.group(1)}%) "
                              "is not set")
        return value

    return _SETTING.sub(setting, text)


def json_properties(body: bytes) -> dict[str, str]:
    """Top-level properties of a JSON object body, as binding data (empty when not JSON)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, or nested too deep
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        str(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in document.items()
    }


def encode_queue_messages(value: Any, encoding: str) -> list[str]:
    """Queue-output value → message texts: str/bytes/QueueMessage, or a list of them."""
    if value is None:
        return []
    if isinstance(value, str | bytes | func_queue.QueueMessage):
        items: list[Any] = [value]
    elif isinstance(value, collections.abc.Iterable) and not isinstance(value, Mapping):
        items = list(value)
    else:
        raise BindingError(
            f"queue output takes str, bytes, QueueMessage or a list of them, "
            f"not {type(value).__name__}"
        )
    texts = []
    for item in items:
        if isinstance(item, func_queue.QueueMessage):
            item = item.get_body()
        if isinstance(item, str):
            data = item.encode("utf-8")
        elif isinstance(item, bytes):
            data = item
        else:
            raise BindingError(f"queue output list items must be str or bytes, "
                               f"not {type(item).__name__}")
        if encoding == "base64":
            texts.append(base64.b64encode(data).decode("ascii"))
        else:
            try:
                texts.append(data.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise BindingError("messageEncoding 'none' needs UTF-8 text messages") from exc
    return texts


def blob_bytes(value: Any) -> bytes:
    """Blob-output value → content: str, bytes or a readable stream."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    read = getattr(value, "read", None)
    if read is not None:
        return read()
    raise BindingError(f"blob output takes str, bytes or a stream, not {type(value).__name__}")


def split_blob_path(path: str) -> tuple[str, str]:
    """`container/name...` → (container, name)."""
    container, _, name = path.strip("/").partition("/")
    if not container or not name:
        raise BindingError(f"blob path {path!r} must be 'container/name'")
    return container, name


class FunctionBindings:
    """The bindings of one function, checked at start-up and applied per invocation."""

    def __init__(
        self,
        function: Any,
        *,
        clients: StorageClients,
        message_encoding: str,
        durable_client: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.function = function
        self.name = function_name(function)
        self.trigger = trigger_binding(function)
        self.types = parameter_types(user_function(function))
        self._clients = clients
        self._encoding = message_encoding
        self._durable_client = durable_client
        self._inputs: list[tuple[dict[str, Any], str | None]] = []
        self._outputs: list[tuple[dict[str, Any], str | None]] = []
        self.http_output: str | None = None
        for binding in raw_bindings(function):
            if binding.get("type") in TRIGGER_TYPES:
                continue
            self._add(binding)

    def _add(self, binding: dict[str, Any]) -> None:
        binding = {key: expand_settings(value) if key in ("path", "queueName") else value
                   for key, value in binding.items()}
        kind = binding.get("type")
        direction = str(binding.get("direction", "IN")).upper()
        where = f"function {self.name}: binding '{binding.get('name')}' ({kind})"
        if direction == "OUT":
            if kind == "http":
                self.http_output = binding["name"]
                return
            if kind not in ("queue", "blob"):
                raise ConfigError(f"{where}: devhost supports queue, blob and http outputs")
            self._outputs.append((binding, resolve_connection(binding.get("connection"))))
            return
        if kind == "durableClient":
            if self._durable_client is None:
                raise ConfigError(f"{where}: no durable runtime to bind")
            self._inputs.append((binding, None))
            return
        if kind == "blob":
            self._inputs.append((binding, resolve_connection(binding.get("connection"))))
            return
        raise ConfigError(f"{where}: devhost supports durableClient and blob inputs")

    def annotation(self, parameter: str) -> Any:
        """The declared type of `parameter`, Optional[...] unwrapped (None if not annotated)."""
        annotation = self.types.get(parameter)
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) == 1:
            return members[0]
        return annotation

    async def prepare(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Arguments for the input and output bindings; returns (kwargs, outs)."""
        kwargs: dict[str, Any] = {}
        for binding, connection in self._inputs:
            name = binding["name"]
            if binding["type"] == "durableClient":
                assert self._durable_client is not None
                kwargs[name] = self._durable_client(binding)
            else:
                assert connection is not None
                kwargs[name] = await self._read_blob_input(binding, connection, data)
        outs: dict[str, Any] = {}
        for binding, _ in self._outputs:
            if binding["name"] != "$return":
                outs[binding["name"]] = OutputValue()
        if self.http_output and self.http_output != "$return":
            outs[self.http_output] = OutputValue()
        kwargs.update(outs)
        return kwargs, outs

    async def complete(self, outs: Mapping[str, Any], result: Any,
                       data: Mapping[str, Any]) -> Any:
        """Write queue/blob outputs after success; return the HTTP output value, if any.

        Every path and value is resolved before anything is written, so an output that
        cannot be resolved writes none of them."""
        writes: list[tuple[str, str, str, Any]] = []
        for binding, connection in self._outputs:
            assert connection is not None
            name = binding["name"]
            value = result if name == "$return" else outs[name].get()
            if value is None:
                continue
            if binding["type"] == "queue":
                queue_name = resolve_template(binding["queueName"], data).lower()
                texts = encode_queue_messages(value, self._encoding)
                writes.append(("queue", connection, queue_name, texts))
            else:
                path = split_blob_path(resolve_template(binding["path"], data))
                writes.append(("blob", connection, "/".join(path), blob_bytes(value)))
        for kind, connection, target, payload in writes:
            if kind == "queue":
                queue = await self._clients.ensure_queue(connection, target)
                for text in payload:
                    await queue.send_message(text)
            else:
                container, blob = target.split("/", 1)
                client = await self._clients.ensure_container(connection, container)
                await client.upload_blob(blob, payload, overwrite=True)
        if self.http_output == "$return":
            return result
        if self.http_output:
            return outs[self.http_output].get()
        return None

    async def run_trigger(self, invoker: Invoker, data: Mapping[str, Any], parameter: str,
                          argument: Any, *, detail: str) -> bool:
        """One try of a non-HTTP trigger: inputs, the function, outputs; True on success.

        Every failure is logged here (the invoker logs the function's own) and returned as
        False, so the caller applies its retry rule (queue visibility, blob tries)."""
        try:
            kwargs, outs = await self.prepare(data)
        except Exception as exc:  # noqa: BLE001 - a failed input binding fails the try
            log.error("function=%s %s input bindings failed: %s: %s",
                      self.name, detail, type(exc).__name__, exc)
            return False
        kwargs[parameter] = argument
        try:
            result = await invoker.invoke(self.function, kwargs, detail=detail)
        except Exception:  # noqa: BLE001 - the invoker logged it; the caller retries
            return False
        try:
            await self.complete(outs, result, data)
        except Exception as exc:  # noqa: BLE001 - outputs not written: the try failed
            log.error("function=%s %s output bindings failed: %s: %s",
                      self.name, detail, type(exc).__name__, exc)
            return False
        return True

    async def _read_blob_input(self, binding: dict[str, Any], connection: str,
                               data: Mapping[str, Any]) -> Any:
        container, blob = split_blob_path(resolve_template(binding["path"], data))
        client = self._clients.container(connection, container).get_blob_client(blob)
        try:
            downloader = await client.download_blob()
            content = await downloader.readall()
        except ResourceNotFoundError:
            return None
        return as_blob_argument(
            self.annotation(binding["name"]), content, name=f"{container}/{blob}",
            uri=client.url, properties=None, metadata=None,
        )


def is_sdk_type(annotation: Any) -> bool:
    """True for a parameter typed with an SDK type of the worker extensions (e.g. the
    BlobClient of azurefunctions-extensions-bindings-blob): it gets a client, not content."""
    try:
        from azurefunctions.extensions.base import get_binding_registry
    except ImportError:  # the app uses no worker extension
        return False
    return bool(get_binding_registry().check_supported_type(annotation))


def sdk_blob_argument(annotation: Any, binding_type: str, *, connection: str,
                      container: str, blob: str) -> Any:
    """What the worker hands an SDK-typed blob parameter: the extension's converter builds
    the client from the blob's reference (model binding data), as in Azure, where the host
    passes that reference and downloads nothing. `connection` is the setting's name."""
    from azurefunctions.extensions.base import Datum, get_binding_registry

    converter = get_binding_registry().get(binding_type)
    if converter is None or not converter.check_input_type_annotation(annotation):
        raise BindingError(f"no worker extension converts {binding_type} to {annotation!r}")
    reference = types.SimpleNamespace(
        version="1.0", source="AzureStorageBlobs", content_type="application/json",
        content=json.dumps({"Connection": connection, "ContainerName": container,
                            "BlobName": blob}))
    return converter.decode(Datum(type="model_binding_data", value=reference),
                            trigger_metadata={}, pytype=annotation)


def as_blob_argument(annotation: Any, content: bytes, *, name: str, uri: str,
                     properties: dict[str, Any] | None,
                     metadata: dict[str, str] | None) -> Any:
    """Blob content as the parameter type asks: str, bytes, or func.InputStream."""
    if annotation is str:
        return content.decode("utf-8")
    if annotation is bytes:
        return content
    return func.blob.InputStream(
        data=content, name=name, uri=uri, length=len(content),
        blob_properties=properties, metadata=metadata,
    )
