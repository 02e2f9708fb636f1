"""Short-lived read grants for mini-batch inputs, signed by the host for its workers.

Scoring worker processes run user code, so they hold no storage credential: for each
mini-batch the host signs one read-only SAS URL per input blob, valid for a few minutes,
and the worker downloads them with plain HTTP GETs. The account key signs where the
connection has one (Azurite, a connection string); otherwise a user-delegation key of the
host's identity, fetched once and reused until close to its expiry.

Signing every URL through the SDK's `generate_blob_sas` costs ~100 µs of the host's
interpreter per blob. URLs of one container and expiry differ only in the blob name inside
the signed string, so the SDK signs one probe blob per (container, expiry), its string to
sign becomes a template, and every blob then costs one HMAC. A second probe signed both
ways checks the template; should an SDK ever sign differently, every URL goes through the
SDK again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from shared.contract.manifest import InputFile

# Grants of one container share an expiry rounded up to this step, so a template serves
# every mini-batch signed within it.
EXPIRY_STEP = timedelta(minutes=1)
DELEGATION_KEY_LIFETIME = timedelta(hours=12)  # the service allows up to 7 days
DELEGATION_KEY_MARGIN = timedelta(hours=1)  # renew a key that ends sooner than this
CLOCK_SKEW = timedelta(minutes=5)  # a delegation grant is valid from this long ago
TEMPLATES_KEPT = 64


class ReadGrants:
    """Signs read-only URLs of input blobs in one account (thread-safe)."""

    def __init__(self, service: BlobServiceClient,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._account = service.account_name
        self._endpoint = service.url.rstrip("/")
        self._account_key: str | None = getattr(service.credential, "account_key", None)
        self._service = service
        self._now = now
        self._delegation = None  # a UserDelegationKey, fetched on first use
        self._templates: OrderedDict[tuple[str, datetime], _Template | None] = OrderedDict()
        self._lock = threading.Lock()

    def urls(self, files: Sequence[InputFile], lifetime: timedelta) -> list[str]:
        """A read URL for each of `files`, valid for at least `lifetime` from now."""
        expiry = _round_up(self._now() + lifetime, EXPIRY_STEP)
        signed = []
        for file in files:
            template = self._template(file.container, expiry)
            token = (template.token(file.blob_name) if template is not None
                     else self._sdk_token(file.container, file.blob_name, expiry))
            signed.append(f"{self._endpoint}/{file.container}/"
                          f"{quote(file.blob_name, safe='~/')}?{token}")
        return signed

    def _template(self, container: str, expiry: datetime) -> _Template | None:
        key = (container, expiry)
        with self._lock:
            if key in self._templates:
                self._templates.move_to_end(key)
                return self._templates[key]
        template = self._make_template(container, expiry)
        with self._lock:
            self._templates[key] = template
            while len(self._templates) > TEMPLATES_KEPT:
                self._templates.popitem(last=False)
        return template

    def _make_template(self, container: str, expiry: datetime) -> _Template | None:
        probe = f"probe-{uuid.uuid4().hex}"
        strings: list[str] = []
        token = self._sdk_token(container, probe, expiry, strings.append)
        resource = f"\n/blob/{self._account}/{container}/{probe}\n"
        if len(strings) != 1 or strings[0].count(resource) != 1:
            return None
        before, after = strings[0].split(resource)
        fields = [item for item in token.split("&") if not item.startswith("sig=")]
        template = _Template(self._signing_key(), before, after,
                             f"\n/blob/{self._account}/{container}/", "&".join(fields))
        check = "check/ä b+c%.png"
        expected = self._sdk_token(container, check, expiry)
        return template if _same_query(template.token(check), expected) else None

    def _sdk_token(self, container: str, blob: str, expiry: datetime,
                   sts_hook: Callable[[str], None] | None = None) -> str:
        permission = BlobSasPermissions(read=True)
        if self._account_key:
            return generate_blob_sas(self._account, container, blob,
                                     account_key=self._account_key, permission=permission,
                                     expiry=expiry, sts_hook=sts_hook)
        return generate_blob_sas(self._account, container, blob,
                                 user_delegation_key=self._delegation_key(expiry),
                                 permission=permission, expiry=expiry,
                                 start=self._now() - CLOCK_SKEW, sts_hook=sts_hook)

    def _signing_key(self) -> bytes:
        if self._account_key:
            return base64.b64decode(self._account_key)
        return base64.b64decode(self._delegation.value)  # set by the probe's signing

    def _delegation_key(self, expiry: datetime):  # noqa: ANN202 - azure UserDelegationKey
        with self._lock:
            key = self._delegation
            if key is None or _parse(key.signed_expiry) - DELEGATION_KEY_MARGIN < expiry:
                start = self._now() - CLOCK_SKEW
                key = self._service.get_user_delegation_key(
                    start, max(expiry, self._now()) + DELEGATION_KEY_LIFETIME)
                self._delegation = key
                self._templates.clear()  # templates signed with the old key
            return key


@dataclass(frozen=True)
class _Template:
    """The SDK's string to sign around the blob name, and the token's other fields."""

    key: bytes
    before: str
    after: str
    resource_prefix: str
    fields: str

    def token(self, blob: str) -> str:
        text = f"{self.before}{self.resource_prefix}{blob}\n{self.after}"
        digest = hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).digest()
        return f"{self.fields}&sig={quote(base64.b64encode(digest).decode())}"


def _same_query(left: str, right: str) -> bool:
    return sorted(left.split("&")) == sorted(right.split("&"))


def _round_up(moment: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    stamp = moment.timestamp()
    return datetime.fromtimestamp(-(-stamp // seconds) * seconds, UTC)


def _parse(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
