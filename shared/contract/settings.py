"""Deployment settings: Azure ML's defaults, validation, and per-job overrides.

The defaults are Azure ML's. Settings that belong to the deployment are rejected as
job overrides. Every number is finite and capped (the caps below; docs/jobs.md lists
them), and the output file name is a plain name that is safe on any disk and in a
download header.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import InvalidRequest
from .names import shown

OUTPUT_ACTIONS = ("append_row", "summary_only")
TEXT_OUTPUT_FORMATS = ("azureml", "csv", "jsonl")  # merged by concatenating parts
OUTPUT_FORMATS = (*TEXT_OUTPUT_FORMATS, "parquet")
# input_format: files (run() gets paths) or a tabular format split by rows (docs/tabular.md)
INPUT_FORMATS = ("files", "csv", "jsonl", "parquet")
LOGGING_LEVELS = ("warning", "info", "debug")
# Settings a job may not override: they shape the deployment's workers, not one job.
DEPLOYMENT_ONLY = frozenset({"max_concurrency_per_instance", "output_action", "logging_level"})

# Upper bounds of the settings.
MAX_MINI_BATCH_SIZE = 100_000  # files (or rows of a table) per run() call
MAX_CONCURRENCY_PER_INSTANCE = 64  # worker processes per deployment on one host
MAX_INSTANCE_COUNT = 1_000  # hosts: the scale-out limit of the apps
MAX_RETRIES = 100
MAX_TIMEOUT_SECONDS = 86_400.0  # one day for one run(mini_batch)
MAX_ERROR_THRESHOLD = 1_000_000_000
MAX_FILE_NAME = 255  # characters of output_file_name
MAX_PASSTHROUGH_COLUMNS = 64
MAX_COLUMN_NAME_CHARS = 256
MAX_DEADLINE_SECONDS = 7 * 86_400.0  # a week: the longest a job may be given to run
# Characters a file name may not hold on some disk (Windows' list) or in a header.
_FILE_NAME_FORBIDDEN = frozenset('/\\:*?"<>|')


@dataclass(frozen=True)
class RetrySettings:
    max_retries: int = 3
    timeout: float = 30.0


@dataclass(frozen=True)
class DeploymentSettings:
    """Everything that shapes how a deployment scores a job."""

    mini_batch_size: int = 10
    max_concurrency_per_instance: int = 1
    instance_count: int = 1
    retry_settings: RetrySettings = field(default_factory=RetrySettings)
    error_threshold: int = -1
    output_action: str = "append_row"
    output_file_name: str = "predictions.csv"
    output_format: str = "azureml"
    logging_level: str = "info"
    # Tabular inputs (docs/tabular.md): rows instead of files, input columns carried along.
    input_format: str = "files"
    passthrough_columns: tuple[str, ...] = ()
    # Seconds from invoke after which no new mini-batch starts (None: no deadline).
    deadline: float | None = None

    @property
    def tabular(self) -> bool:
        """Whether jobs split their input by rows (input_format csv, jsonl or parquet)."""
        return self.input_format != "files"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passthrough_columns": list(self.passthrough_columns)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DeploymentSettings:
        """Build and validate settings from a plain mapping (API body or YAML)."""
        return cls().with_overrides(data or {}, per_job=False)

    def with_overrides(self, overrides: Mapping[str, Any], *, per_job: bool) -> DeploymentSettings:
        """Return a copy with `overrides` applied (nested or dotted keys), validated."""
        flat = _flatten(overrides)
        unknown = sorted(k for k in flat if k not in _FIELDS)
        if unknown:
            raise InvalidRequest(
                f"unknown setting(s): {', '.join(unknown)}",
                details={"allowed": sorted(_FIELDS)},
                code="invalid_setting",
            )
        if per_job:
            fixed = sorted(k for k in flat if k in DEPLOYMENT_ONLY)
            if fixed:
                raise InvalidRequest(
                    f"setting(s) {', '.join(fixed)} belong to the deployment and cannot be "
                    "set per job",
                    code="invalid_setting",
                )
        retry = self.retry_settings
        top: dict[str, Any] = {}
        for key, raw in flat.items():
            value = _FIELDS[key](key, raw)
            if key == "retry_settings.max_retries":
                retry = replace(retry, max_retries=value)
            elif key == "retry_settings.timeout":
                retry = replace(retry, timeout=value)
            else:
                top[key] = value
        return _check_tabular(replace(self, retry_settings=retry, **top))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidRequest("settings must be a mapping", code="invalid_setting")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _int(minimum: int, maximum: int):
    expected = f"an integer from {minimum} to {maximum}"

    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not (
                math.isfinite(value) and value.is_integer())):
            raise _bad(key, value, expected)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise _bad(key, value, expected) from None
        if not minimum <= number <= maximum:
            raise _bad(key, value, expected)
        return number
    return check


def _seconds(maximum: float):
    expected = f"a number of seconds > 0 and at most {maximum:g}"

    def check(key: str, value: Any) -> float:
        if isinstance(value, bool):
            raise _bad(key, value, expected)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _bad(key, value, expected) from None
        if not (math.isfinite(number) and 0 < number <= maximum):
            raise _bad(key, value, expected)
        return number
    return check


def _choice(options: tuple[str, ...]):
    def check(key: str, value: Any) -> str:
        text = value.lower() if isinstance(value, str) else ""
        if text not in options:
            raise _bad(key, value, "one of " + ", ".join(options))
        return text
    return check


def _file_name(key: str, value: Any) -> str:
    expected = (f"a plain file name of 1 to {MAX_FILE_NAME} characters: no folders, none of "
                '\\ / : * ? " < > |, no control characters, not ending in a dot or space')
    if not isinstance(value, str) or not 0 < len(value) <= MAX_FILE_NAME:
        raise _bad(key, value, expected)
    unsafe = any(c in _FILE_NAME_FORBIDDEN or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                 for c in value)
    if unsafe or value in (".", "..") or value != value.strip() or value.endswith("."):
        raise _bad(key, value, expected)
    return value


def _check_tabular(settings: DeploymentSettings) -> DeploymentSettings:
    if settings.passthrough_columns and not settings.tabular:
        raise InvalidRequest(
            "setting passthrough_columns needs a tabular input_format (csv, jsonl or parquet): "
            "with input_format files, run() gets file paths, which have no columns",
            details={"setting": "passthrough_columns"}, code="invalid_setting")
    return settings


def _bad(key: str, value: Any, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"setting {key}={shown(value)} is invalid: expected {expected}",
        details={"setting": key, "value": shown(value)},
        code="invalid_setting",
    )


_FIELDS = {
    "mini_batch_size": _int(1, MAX_MINI_BATCH_SIZE),
    "max_concurrency_per_instance": _int(1, MAX_CONCURRENCY_PER_INSTANCE),
    "instance_count": _int(1, MAX_INSTANCE_COUNT),
    "retry_settings.max_retries": _int(0, MAX_RETRIES),
    "retry_settings.timeout": _seconds(MAX_TIMEOUT_SECONDS),
    "error_threshold": _int(-1, MAX_ERROR_THRESHOLD),
    "output_action": _choice(OUTPUT_ACTIONS),
    "output_file_name": _file_name,
    "output_format": _choice(OUTPUT_FORMATS),
    "logging_level": _choice(LOGGING_LEVELS),
    "input_format": lambda key, value: check_input_format(value),
    "passthrough_columns": lambda key, value: check_passthrough_columns(value),
    "deadline": lambda key, value: check_deadline(value),
}


# ----- deadline: a bounded duration -------------------------------------------------------

_DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                       r"(?:(\d+(?:\.\d+)?)s)?")
# ISO 8601 durations of days and time (P1D, PT2H30M, P1DT12H); no years, months or weeks.
_ISO_DURATION = re.compile(r"P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?"
                           r"(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?")
# The deadline's JSON schema (OpenAPI): seconds, or a duration as text.
DEADLINE_SCHEMA: dict[str, Any] = {
    "description": "seconds from invoke after which no new mini-batch starts: a number, "
                   "90s, 30m, 2h, 1d, 1h30m or ISO 8601 (PT2H); at most 7 days",
    "nullable": True,
    "oneOf": [{"type": "number", "exclusiveMinimum": True, "minimum": 0,
               "maximum": MAX_DEADLINE_SECONDS},
              {"type": "string", "minLength": 1, "maxLength": 40}]}
DEADLINE_RULE = (f"a duration of more than 0 and at most {MAX_DEADLINE_SECONDS / 86_400:g} days: "
                 "seconds (3600), a number with units (90s, 30m, 2h, 1d, 1h30m) or ISO 8601 "
                 "(PT2H)")


def check_deadline(value: Any) -> float | None:
    """The setting `deadline` in seconds (None or "" for none); InvalidRequest otherwise."""
    if value is None or value == "":
        return None
    seconds = _duration_seconds(value)
    if seconds is None or not (math.isfinite(seconds) and 0 < seconds <= MAX_DEADLINE_SECONDS):
        raise _bad("deadline", value, DEADLINE_RULE)
    return seconds


def _duration_seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    found = _ISO_DURATION.fullmatch(text.upper()) if text.startswith("p") else \
        _DURATION.fullmatch(text)
    if found is None or not any(found.groups()) or text.upper().endswith("T"):
        return None
    return sum(float(amount) * unit for amount, unit in
               zip(found.groups(), _DURATION_UNITS.values(), strict=True) if amount)


# ----- tabular settings: light, as the CLI checks settings too (no pandas) ---------------


def check_input_format(value: Any) -> str:
    """The setting `input_format` as one of INPUT_FORMATS (case-insensitive)."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in INPUT_FORMATS:
        raise InvalidRequest(
            f"setting input_format={shown(value)} is invalid: expected one of "
            + ", ".join(INPUT_FORMATS),
            details={"setting": "input_format", "value": shown(value)},
            code="invalid_setting",
        )
    return text


def check_passthrough_columns(value: Any) -> tuple[str, ...]:
    """The setting `passthrough_columns`: a list of column names, or one comma-separated
    string (as `--set passthrough_columns=id,region` gives it); () for none."""
    if value is None or value == "":
        return ()
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise _bad_columns(value, "a list of column names")
    cleaned = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise _bad_columns(value, "column names that are non-empty strings")
        name = name.strip()
        if len(name) > MAX_COLUMN_NAME_CHARS:
            raise _bad_columns(value, f"column names of at most {MAX_COLUMN_NAME_CHARS} characters")
        if name in cleaned:
            raise _bad_columns(value, f"each column once ({name!r} is named twice)")
        cleaned.append(name)
    if len(cleaned) > MAX_PASSTHROUGH_COLUMNS:
        raise _bad_columns(value, f"at most {MAX_PASSTHROUGH_COLUMNS} columns")
    return tuple(cleaned)


def _bad_columns(value: Any, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"setting passthrough_columns={shown(value)} is invalid: expected {expected}",
        details={"setting": "passthrough_columns", "value": shown(value)},
        code="invalid_setting",
    )

