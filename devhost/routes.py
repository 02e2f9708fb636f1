"""Functions (ASP.NET-style) route templates: `{name}`, `{name?}`, `{name=default}`,
`{name:int}` and other constraints, `{*rest}`; literals match case-insensitively."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from devhost.config import ConfigError

_PARAMETER = re.compile(r"\{([^{}]*)\}")
_CONSTRAINT = re.compile(r"^([A-Za-z]+)(?:\((.*)\))?$")


def _is_int(value: str) -> bool:
    return re.fullmatch(r"-?\d+", value) is not None


def _is_number(value: str) -> bool:
    return re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", value) is not None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_SIMPLE: dict[str, Callable[[str], bool]] = {
    "int": _is_int,
    "long": _is_int,
    "float": _is_number,
    "double": _is_number,
    "decimal": _is_number,
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "guid": _is_guid,
    "datetime": _is_datetime,
}


def _constraint(text: str, template: str) -> Callable[[str], bool]:
    match = _CONSTRAINT.match(text)
    if not match:
        raise ConfigError(f"route {template!r}: bad constraint {text!r}")
    kind, args = match.group(1).lower(), match.group(2)
    if kind in _SIMPLE and args is None:
        return _SIMPLE[kind]
    if kind == "regex" and args is not None:
        pattern = re.compile(args)
        return lambda v: pattern.search(v) is not None
    try:
        numbers = [int(a) for a in (args or "").split(",")] if args else []
    except ValueError as exc:
        raise ConfigError(f"route {template!r}: bad constraint {text!r}") from exc
    if kind == "minlength" and len(numbers) == 1:
        return lambda v: len(v) >= numbers[0]
    if kind == "maxlength" and len(numbers) == 1:
        return lambda v: len(v) <= numbers[0]
    if kind == "length" and len(numbers) in (1, 2):
        low, high = numbers[0], numbers[-1]
        return lambda v: low <= len(v) <= high
    if kind in ("min", "max", "range") and len(numbers) == (2 if kind == "range" else 1):
        low = numbers[0] if kind != "max" else None
        high = numbers[-1] if kind != "min" else None
        return lambda v: _is_int(v) and (low is None or int(v) >= low) and (
            high is None or int(v) <= high)
    raise ConfigError(f"route {template!r}: unsupported constraint {text!r}")


@dataclass(frozen=True)
class _Parameter:
    name: str
    group: str
    checks: tuple[Callable[[str], bool], ...]
    default: str | None
    optional: bool
    catch_all: bool


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled route template under a route prefix."""

    template: str
    pattern: re.Pattern[str]
    parameters: tuple[_Parameter, ...]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str, prefix: str = "") -> RouteTemplate:
        """Compile `template` (without a leading slash) under `prefix` (e.g. 'api')."""
        route = template.strip().strip("/")
        segments = [s for s in prefix.strip("/").split("/") if s] + (
            route.split("/") if route else [])
        regex = "^"
        parameters: list[_Parameter] = []
        precedence: list[int] = []
        for index, segment in enumerate(segments):
            if not segment:
                raise ConfigError(f"route {template!r}: empty segment")
            pieces = _PARAMETER.split(segment)
            literal_parts, names = pieces[0::2], pieces[1::2]
            if not names:
                regex += "/" + re.escape(segment)
                precedence.append(1)
                continue
            body = ""
            for position, literal in enumerate(literal_parts):
                body += re.escape(literal)
                if position < len(names):
                    parameter = cls._parameter(names[position], len(parameters), template)
                    if parameter.catch_all and index != len(segments) - 1:
                        raise ConfigError(f"route {template!r}: {{*...}} must be last")
                    parameters.append(parameter)
                    body += f"(?P<{parameter.group}>{'.*' if parameter.catch_all else '[^/]+?'})"
            lone = len(names) == 1 and literal_parts == ["", ""]
            last = parameters[-1]
            if lone and (last.optional or last.catch_all or last.default is not None):
                regex += f"(?:/{body})?"
                precedence.append(5 if last.catch_all else 4)
            else:
                regex += "/" + body
                precedence.append(2 if not lone or last.checks else 3)
        # \Z, not $ (which also matches before a final newline); a catch-all takes newlines.
        pattern = re.compile(regex + r"/?\Z", re.IGNORECASE | re.DOTALL)
        return cls(template, pattern, tuple(parameters), tuple(precedence))

    @staticmethod
    def _parameter(text: str, index: int, template: str) -> _Parameter:
        catch_all = text.startswith("*")
        text = text.lstrip("*")
        default = None
        if "=" in text:
            text, default = text.split("=", 1)
        optional = text.endswith("?")
        text = text.rstrip("?")
        name, *constraints = text.split(":")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"route {template!r}: bad parameter name {name!r}")
        checks = tuple(_constraint(c, template) for c in constraints)
        return _Parameter(name, f"p{index}", checks, default, optional, catch_all)

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters when `path` (URL-decoded, leading '/') matches, else None."""
        found = self.pattern.match(path)
        if not found:
            return None
        values: dict[str, str] = {}
        for parameter in self.parameters:
            value = found.group(parameter.group)
            if value is None or (value == "" and parameter.catch_all):
                if parameter.default is not None:
                    values[parameter.name] = parameter.default
                continue
            if not all(check(value) for check in parameter.checks):
                return None
            values[parameter.name] = value
        return values
