"""The local function, master and system keys, kept in storage like the Functions host
keeps them, and the state file through which local tools find a running devhost and its key.

State files hold keys: they are written `0600` in a `0700` folder, never through a symlink
(devhost.private_files)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from devhost.private_files import private_folder, write_private
from devhost.state_file import read_state, state_file

SECRETS_CONTAINER = "azure-webjobs-secrets"
SECRETS_BLOB = "devhost/host.json"
KEY_HEADER = "x-functions-key"
# The Durable extension's system key: its HTTP API takes it (or the master key), as in Azure.
DURABLE_SYSTEM_KEY = "durabletask_extension"


def _new_key() -> str:
    return secrets.token_urlsafe(40)


@dataclass(frozen=True)
class KeyRing:
    """The keys a request may present: the function key, the Durable extension's system
    key, or the master key (admin, and everything else)."""

    function_key: str
    master_key: str
    system_key: str = ""

    def __post_init__(self) -> None:
        if not self.system_key:
            object.__setattr__(self, "system_key", _derived_system_key(self.master_key))

    def allows(self, auth_level: str, presented: str | None) -> bool:
        """Whether `presented` opens a function of `auth_level` (anonymous/function/admin)."""
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not presented:
            return False
        if _same(presented, self.master_key):
            return True
        return level == "function" and _same(presented, self.function_key)

    def allows_system(self, presented: str | None) -> bool:
        """Whether `presented` opens the Durable HTTP API (system or master key)."""
        return bool(presented) and (_same(presented, self.system_key)
                                    or _same(presented, self.master_key))

    def to_secrets(self) -> dict[str, Any]:
        """The host-style secrets document."""
        return {
            "masterKey": {"name": "master", "value": self.master_key, "encrypted": False},
            "functionKeys": [{"name": "default", "value": self.function_key,
                              "encrypted": False}],
            "systemKeys": [{"name": DURABLE_SYSTEM_KEY, "value": self.system_key,
                            "encrypted": False}],
        }

    @classmethod
    def from_secrets(cls, document: dict[str, Any]) -> KeyRing:
        """Parse a host-style secrets document (one without system keys derives its own)."""
        function_keys = document.get("functionKeys") or []
        system = {str(k.get("name")): str(k.get("value"))
                  for k in document.get("systemKeys") or [] if isinstance(k, dict)}
        return cls(function_key=str(function_keys[0]["value"]),
                   master_key=str(document["masterKey"]["value"]),
                   system_key=system.get(DURABLE_SYSTEM_KEY, ""))


def _same(presented: str, key: str) -> bool:
    return hmac.compare_digest(presented.encode(), key.encode())


def _derived_system_key(master_key: str) -> str:
    # Keys stored before devhost had a system key: one derived from the master key, which it
    # does not reveal.
    digest = hmac.new(master_key.encode(), DURABLE_SYSTEM_KEY.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


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
        return KeyRing(function_key=override, master_key=stored.master_key,
                       system_key=stored.system_key)
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


def write_state(port: int, *, url: str, keys: KeyRing, script_root: Path) -> Path:
    """Record a running devhost: atomically, readable by its user only."""
    path = state_file(port)
    private_folder(path.parent)
    document = {"url": url, "key": keys.function_key, "master_key": keys.master_key,
                "pid": os.getpid(), "script_root": str(script_root)}
    write_private(path, json.dumps(document).encode())
    return path


def remove_state(port: int) -> None:
    """Remove the state file if it is this process's."""
    state = read_state(port)
    if state is not None and state.pid == os.getpid():
        state_file(port).unlink(missing_ok=True)
