"""Host configuration: `host.json` and `local.settings.json`, validated once at start-up."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("devhost")

# An app setting AzureFunctionsJobHost__a__b overrides host.json's a.b, as in the Functions host.
HOST_OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


class ConfigError(ValueError):
    """The host or app configuration is invalid; devhost refuses to start."""


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")


def parse_timespan(text: str, setting: str) -> float:
    """Seconds in a .NET TimeSpan string such as `00:00:02` or `1.00:00:00.5`."""
    match = _TIMESPAN.match(str(text).strip())
    if not match:
        raise ConfigError(f"{setting}: {text!r} is not a TimeSpan like 00:05:00")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise ConfigError(f"{setting}: {text!r} has minutes or seconds above 59")
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues` with the Functions host's defaults."""

    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    def __post_init__(self) -> None:
        if self.max_polling_interval < 0.1:
            raise ConfigError("queues.maxPollingInterval must be at least 00:00:00.1")
        if self.visibility_timeout < 0:
            raise ConfigError("queues.visibilityTimeout must not be negative")
        if not 1 <= self.batch_size <= 32:
            raise ConfigError("queues.batchSize must be between 1 and 32")
        if self.new_batch_threshold < 0:
            raise ConfigError("queues.newBatchThreshold must not be negative")
        if self.max_dequeue_count < 1:
            raise ConfigError("queues.maxDequeueCount must be at least 1")
        if self.message_encoding not in ("base64", "none"):
            raise ConfigError("queues.messageEncoding must be 'base64' or 'none'")

    @classmethod
    def from_json(cls, section: dict[str, Any]) -> QueueOptions:
        """Build from the `extensions.queues` object of host.json (keys are case-insensitive)."""
        values = {key.lower(): value for key, value in section.items()}
        batch_size = _int(values, "batchsize", 16)
        return cls(
            max_polling_interval=_timespan(values, "maxpollinginterval", 60.0),
            visibility_timeout=_timespan(values, "visibilitytimeout", 0.0),
            batch_size=batch_size,
            new_batch_threshold=_int(values, "newbatchthreshold", batch_size // 2),
            max_dequeue_count=_int(values, "maxdequeuecount", 5),
            message_encoding=str(values.get("messageencoding", "base64")).lower(),
        )


@dataclass(frozen=True)
class HostConfig:
    """What devhost reads from host.json."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    hub_name: str = "TestHubName"
    # None: unbounded ("-1" in host.json).
    function_timeout: float | None = 1800.0

    @classmethod
    def load(cls, path: Path, env: Mapping[str, str] | None = None) -> HostConfig:
        """Read host.json at `path` (a missing file gives the defaults), with the overrides
        of `AzureFunctionsJobHost__...` app settings in `env` (default: the environment)."""
        document: dict[str, Any] = {}
        if path.exists():
            try:
                document = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{path}: not readable JSON: {exc}") from exc
            if not isinstance(document, dict):
                raise ConfigError(f"{path}: the top level must be an object")
        for name, value in host_overrides(os.environ if env is None else env):
            set_path(document, name, value)
            log.info("host.json %s = %r (app setting %s%s)", ".".join(name), value,
                     HOST_OVERRIDE_PREFIX, "__".join(name))
        return cls.from_json(document)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> HostConfig:
        """Build from a parsed host.json document."""
        extensions = _section(document, "extensions")
        http = _section(extensions, "http")
        durable = _section(extensions, "durableTask")
        prefix = str(http.get("routePrefix", "api")).strip("/")
        timeout_text = document.get("functionTimeout")
        if timeout_text is None:
            timeout: float | None = 1800.0
        elif str(timeout_text).strip() == "-1":
            timeout = None
        else:
            timeout = parse_timespan(timeout_text, "functionTimeout")
        return cls(
            route_prefix=prefix,
            queues=QueueOptions.from_json(_section(extensions, "queues")),
            hub_name=str(durable.get("hubName", "TestHubName")),
            function_timeout=timeout,
        )


def host_overrides(env: Mapping[str, str]) -> list[tuple[tuple[str, ...], Any]]:
    """The host.json paths and values that `AzureFunctionsJobHost__a__b` settings set.

    Values are strings in the environment: whole numbers become integers and true/false
    booleans, the rest (TimeSpans, names) stays text, as host.json would spell them.
    """
    prefix = HOST_OVERRIDE_PREFIX.lower()
    overrides = []
    for key in sorted(env):
        if not key.lower().startswith(prefix):
            continue
        names = tuple(key[len(prefix):].split("__"))
        if not all(names):
            raise ConfigError(f"app setting {key}: empty name in the host.json path")
        overrides.append((names, _setting_value(env[key])))
    return overrides


def set_path(document: dict[str, Any], names: tuple[str, ...], value: Any) -> None:
    """Set document[a][b]... = value, matching existing keys case-insensitively as the
    Functions host's configuration does."""
    node = document
    for depth, name in enumerate(names):
        key = next((existing for existing in node if existing.lower() == name.lower()), name)
        if depth == len(names) - 1:
            node[key] = value
            return
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"app setting {HOST_OVERRIDE_PREFIX}{'__'.join(names)}: "
                              f"host.json {'.'.join(names[:depth + 1])} is not an object")
        node = child


def _setting_value(text: str) -> Any:
    stripped = text.strip()
    if re.fullmatch(r"-?\d+", stripped):
        return int(stripped)
    if stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    return text


def load_local_settings(path: Path) -> dict[str, str]:
    """Copy `Values` of local.settings.json into os.environ without overriding; return them."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON: {exc}") from exc
    values = document.get("Values", {}) if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: 'Values' must be an object of strings")
    settings = {str(key): str(value) for key, value in values.items()}
    mode = path.stat().st_mode
    if settings and mode & 0o044:
        # The app's code may run processes as other users (scoring workers do, as nobody).
        log.warning("%s is readable by other users (mode %o) and holds settings such as "
                    "connection strings: chmod 600 it", path, mode & 0o777)
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    return settings


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"host.json: '{name}' must be an object")
    return value


def _int(values: dict[str, Any], key: str, default: int) -> int:
    value = values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"host.json: queues.{key} must be an integer, got {value!r}")
    return value


def _timespan(values: dict[str, Any], key: str, default: float) -> float:
    if key not in values:
        return default
    return parse_timespan(values[key], f"queues.{key}")
