"""The local function and master keys, kept in storage like the Functions host keeps them,
and the state file through which local tools find a running devhost and its key."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

SECRETS_CONTAINER = "azure-webjobs-secrets"
SECRETS_BLOB = "devhost/host.json"
KEY_HEADER = "x-functions-key"


def _new_key() -> str:
    return secrets.token_urlsafe(40)


@dataclass(frozen=True)
class KeyRing:
    """The keys a request may present: the function key, or the master key (admin)."""

    function_key: str
    master_key: str

    def allows(self, auth_level: str, presented: str | None) -> bool:
        """Whether `presented` opens a function of `auth_level` (anonymous/function/admin)."""
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not presented:
            return False
        if hmac.compare_digest(presented.encode(), self.master_key.encode()):
            return True
        return level == "function" and hmac.compare_digest(
            presented.encode(), self.function_key.encode())

    def to_secrets(self) -> dict[str, Any]:
        """The host-style secrets document."""
        return {
            "masterKey": {"name": "master", "value": self.master_key, "encrypted": False},
            "functionKeys": [{"name": "default", "value": self.function_key,
                              "encrypted": False}],
        }

    @classmethod
    def from_secrets(cls, document: dict[str, Any]) -> KeyRing:
        """Parse a host-style secrets document."""
        function_keys = document.get("functionKeys") or []
        return cls(function_key=str(function_keys[0]["value"]),
                   master_key=str(document["masterKey"]["value"]))


async def load_keys(blob_service: BlobServiceClient) -> KeyRing:
    """Env DEVHOST_FUNCTION_KEY if set; else the stored keys, generated once on first use."""
    container = blob_service.get_container_client(SECRETS_CONTAINER)
    blob = container.get_blob_client(SECRETS_BLOB)
    stored = await _read_keys(blob)
    if stored is None:
        try:
            await container.create_container()
        except ResourceExistsError:
            pass
        fresh = KeyRing(function_key=_new_key(), master_key=_new_key())
        try:
            # Create-only: of two hosts starting together, one writes and both use its keys.
            await blob.upload_blob(json.dumps(fresh.to_secrets(), indent=2), overwrite=False)
            stored = fresh
        except ResourceExistsError:
            stored = await _read_keys(blob)
            if stored is None:
                raise RuntimeError("stored devhost keys vanished while being created") from None
    override = os.environ.get("DEVHOST_FUNCTION_KEY", "").strip()
    if override:
        return KeyRing(function_key=override, master_key=stored.master_key)
    return stored


async def _read_keys(blob: Any) -> KeyRing | None:
    try:
        downloader = await blob.download_blob()
        document = json.loads(await downloader.readall())
        return KeyRing.from_secrets(document)
    except ResourceNotFoundError:
        return None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise RuntimeError(
            f"{SECRETS_CONTAINER}/{SECRETS_BLOB} is not a valid secrets document: {exc}; "
            "delete it to generate new keys"
        ) from exc


def state_dir() -> Path:
    """Where state files live: $DEVHOST_STATE_DIR, else ~/.devhost."""
    configured = os.environ.get("DEVHOST_STATE_DIR", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".devhost"


def state_file(port: int) -> Path:
    """The state file of the devhost on `port`."""
    return state_dir() / f"{port}.json"


def write_state(port: int, *, url: str, keys: KeyRing, script_root: Path) -> Path:
    """Record a running devhost (atomically, readable by its user only)."""
    path = state_file(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"url": url, "key": keys.function_key, "master_key": keys.master_key,
                "pid": os.getpid(), "script_root": str(script_root)}
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
    os.replace(temporary, path)
    return path


def remove_state(port: int) -> None:
    """Remove the state file if it is this process's."""
    path = state_file(port)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
