"""Registered environments, and the check that each one resolves before anything is stored.

An environment version is a record in the registry container (`assets/environment/<name>/
versions/<N>.json`, with a digest index as for models and code): its spec and the package
set uv resolved it to. Registering resolves first, with `uv pip compile` for the scoring
hosts' Python and platform, so an environment that cannot be installed is refused with uv's
own explanation (Unprocessable, HTTP 422) and nothing is written; content registered before
under the same name is its existing version, with no resolution at all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError

from shared.contract import layout
from shared.contract.environment_spec import SUPPORTED_PYTHONS, EnvironmentSpec, check_python
from shared.contract.errors import Busy, InvalidRequest, NotFound, Unprocessable
from shared.contract.layout import REGISTRY_CONTAINER
from shared.contract.names import check_asset_name
from shared.contract.registry_records import EnvironmentRecord
from shared.contract.timestamps import utc_now
from shared.contract.uv_settings import (
    MANAGED_PYTHONS_SETTING,
    managed_pythons,
    uv_binary,
    uv_environment,
)
from shared.control.asset_versions import version_numbers
from shared.storage.account import StorageAccount
from shared.storage.blob_records import BlobRecords

ENVIRONMENT_KIND = "environment"
# The scoring hosts' interpreter and platform, which environments are resolved for.
SCORING_PYTHON_SETTING = "BATCHFN_SCORING_PYTHON"  # "3.11"; default: this interpreter's
SCORING_PLATFORM_SETTING = "BATCHFN_SCORING_PLATFORM"
DEFAULT_SCORING_PLATFORM = "x86_64-manylinux_2_28"
_PLATFORM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # uv's --python-platform names
RESOLVE_SECONDS = 300
MAX_UV_MESSAGE = 4000
MAX_VERSION_DIGITS = 9
_VERSION_ATTEMPTS = 20


def _uv() -> str:
    found = uv_binary()
    if found is None:
        raise Unprocessable("uv is not installed on this host: install the pinned uv package "
                            "(requirements.txt)", code="uv_missing")
    return found


def scoring_python() -> str:
    """The scoring hosts' Python, "X.Y"; ValueError for a setting that is not one the
    worker runtime supports."""
    configured = os.environ.get(SCORING_PYTHON_SETTING, "").strip()
    if configured and configured not in SUPPORTED_PYTHONS:
        raise ValueError(f"{SCORING_PYTHON_SETTING} must be one of "
                         f"{', '.join(SUPPORTED_PYTHONS)}, not {configured!r}")
    return configured or f"{sys.version_info.major}.{sys.version_info.minor}"


def scoring_platform() -> str:
    """The scoring hosts' platform, as uv names it; ValueError for a malformed setting."""
    configured = os.environ.get(SCORING_PLATFORM_SETTING, "").strip()
    if configured and not _PLATFORM.fullmatch(configured):
        raise ValueError(f"{SCORING_PLATFORM_SETTING} must be a uv platform name such as "
                         f"{DEFAULT_SCORING_PLATFORM}, not {configured!r}")
    return configured or DEFAULT_SCORING_PLATFORM


def check_settings() -> None:
    """Raise ValueError for a malformed environment setting of the control app (at start,
    like the app's other settings: a typo must not refuse or mis-resolve every deployment)."""
    scoring_python()
    scoring_platform()
    managed_pythons()


def resolve(spec: EnvironmentSpec) -> tuple[str, ...]:
    """The packages (`name==version`) `spec` resolves to on the scoring hosts; Unprocessable
    with uv's own explanation where it cannot, or where its Python cannot be had there."""
    python = check_python(spec.python) if spec.python else scoring_python()
    if python != scoring_python() and not managed_pythons():
        raise Unprocessable(
            f"the environment needs Python {python}, and the scoring hosts have Python "
            f"{scoring_python()} only ({MANAGED_PYTHONS_SETTING} is not set, so they install "
            f"no uv-managed Python): pin python={scoring_python()} in the conda file, or "
            "enable managed Pythons on the scoring app",
            details={"python": python, "available": [scoring_python()]},
            code="python_unavailable")
    if not spec.requirements:
        return ()
    platform = scoring_platform()
    with tempfile.TemporaryDirectory(prefix="batchfn-resolve-") as folder:
        requirements = Path(folder) / "requirements.in"
        requirements.write_text("\n".join(spec.requirements) + "\n", encoding="utf-8")
        command = [_uv(), "pip", "compile", str(requirements), "--quiet", "--no-header",
                   "--no-annotate", "--python-version", python, "--python-platform", platform]
        try:
            done = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                                  timeout=RESOLVE_SECONDS, stdin=subprocess.DEVNULL,
                                  env=uv_environment(os.environ, {"HOME": folder}))
        except subprocess.TimeoutExpired:
            raise Unprocessable(f"resolving the environment took longer than "
                                f"{RESOLVE_SECONDS}s: try again, or pin versions",
                                code="environment_unresolvable") from None
    if done.returncode != 0:
        message = _uv_message(done.stderr or done.stdout)
        raise Unprocessable(f"the environment's requirements cannot be installed: {message}",
                            details={"requirements": list(spec.requirements[:50]),
                                     "python": python, "uv": message},
                            code="environment_unresolvable")
    return tuple(line.strip() for line in done.stdout.splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))


def _uv_message(text: str) -> str:
    """uv's explanation, without ANSI colours, bounded."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return plain if len(plain) <= MAX_UV_MESSAGE else plain[:MAX_UV_MESSAGE] + " [...]"


class EnvironmentStore:
    """Versions of registered environments, numbered per name, found by content digest."""

    def __init__(self, account: StorageAccount) -> None:
        registry = account.blob_service().get_container_client(REGISTRY_CONTAINER)
        self._registry = registry
        self._versions = BlobRecords(registry, load=EnvironmentRecord.from_dict,
                                     dump=EnvironmentRecord.to_dict, what="environment")
        self._digests = BlobRecords(registry, load=dict, dump=dict, what="environment digest")

    def get(self, name: str, version: str) -> EnvironmentRecord:
        """The environment `name:version` (`version` may be "latest"); NotFound if absent."""
        check_asset_name(name)
        if version == "latest":
            numbers = self._version_numbers(name)
            if not numbers:
                raise NotFound(f"environment {name!r} does not exist",
                               details={"environment": name}, code="environment_not_found")
            version = str(max(numbers))
        elif not (version.isdigit() and len(version) <= MAX_VERSION_DIGITS):
            raise InvalidRequest(f"invalid environment version {version!r}: a number (at most "
                                 f"{MAX_VERSION_DIGITS} digits) or latest",
                                 details={"field": "version"}, code="invalid_version")
        found = self._versions.read(layout.asset_version_record(ENVIRONMENT_KIND, name,
                                                                int(version)))
        if found is None:
            raise NotFound(f"environment {name}:{version} does not exist",
                           details={"environment": name, "version": version},
                           code="environment_not_found")
        return found

    def list_versions(self, name: str) -> list[EnvironmentRecord]:
        """All versions of an environment, oldest first (NotFound: none)."""
        check_asset_name(name)
        numbers = sorted(self._version_numbers(name))
        if not numbers:
            raise NotFound(f"environment {name!r} does not exist",
                           details={"environment": name}, code="environment_not_found")
        return [self.get(name, str(n)) for n in numbers]

    def list_latest(self) -> list[EnvironmentRecord]:
        """The latest version of every environment, by name."""
        prefix = layout.asset_index(ENVIRONMENT_KIND, "").rstrip("/") + "/"
        names = set()
        try:
            for blob in self._registry.list_blob_names(name_starts_with=prefix):
                names.add(blob[len(prefix):].split("/", 1)[0])
        except ResourceNotFoundError:
            return []
        return [self.get(name, "latest") for name in sorted(names) if name]

    def register(self, name: str, spec: EnvironmentSpec) -> tuple[EnvironmentRecord, bool]:
        """`spec` as a version of `name`: the existing one with this content, or a new one
        once it resolves (Unprocessable with uv's explanation otherwise); (record, created)."""
        check_asset_name(name)
        existing = self._find_by_digest(name, spec.digest)
        if existing is not None:
            return existing, False
        resolved = resolve(spec)
        for _ in range(_VERSION_ATTEMPTS):
            version = str(max(self._version_numbers(name), default=0) + 1)
            record = EnvironmentRecord(name=name, version=version, digest=spec.digest,
                                       spec=spec, resolved=resolved, created_at=utc_now())
            blob = layout.asset_version_record(ENVIRONMENT_KIND, name, version)
            if not self._versions.create(blob, record):
                continue  # another registration took this number
            digest_blob = layout.asset_digest_record(ENVIRONMENT_KIND, name, spec.digest)
            if not self._digests.create(digest_blob, {"version": version}):
                self._versions.delete(blob)  # the same content won concurrently: theirs
                winner = self._find_by_digest(name, spec.digest)
                assert winner is not None
                return winner, False
            return record, True
        raise Busy(f"environment {name!r}: version numbers kept being taken concurrently; "
                   "try again", details={"environment": name})

    def _find_by_digest(self, name: str, digest: str) -> EnvironmentRecord | None:
        index = self._digests.read(layout.asset_digest_record(ENVIRONMENT_KIND, name, digest))
        return None if index is None else self.get(name, str(index["version"]))

    def _version_numbers(self, name: str) -> list[int]:
        return version_numbers(self._registry, ENVIRONMENT_KIND, name)
