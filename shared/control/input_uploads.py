"""Upload grants for local inputs: write-only URLs under the default datastore.

The CLI and client turn a local file or folder into an input by asking for a grant, then
writing each file to its URL; the job then reads `azureml://datastores/workspaceblobstore/
paths/uploads/<id>/<name>`, like Azure ML's CLI does with local paths.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from shared.contract import layout
from shared.contract.errors import InvalidRequest
from shared.contract.layout import DATA_CONTAINER, DEFAULT_DATASTORE
from shared.contract.names import check_relative_path

GRANT_TTL = timedelta(hours=2)
MAX_FILES = 100_000


def grant_input_upload(service: BlobServiceClient, body: Any) -> dict[str, Any]:
    """Grant write URLs for `{"name": <file or folder name>, "files": [relative paths]}`.

    A single file is `{"name": "a.png", "files": ["a.png"]}` (input type uri_file).
    """
    if not isinstance(body, dict) or set(body) - {"name", "files"}:
        raise InvalidRequest("expected {\"name\": ..., \"files\": [...]}", code="invalid_body")
    name = check_relative_path(body.get("name"), field="name")
    if "/" in name:
        raise InvalidRequest("name must be a plain file or folder name", code="invalid_path")
    files = body.get("files")
    if not isinstance(files, list) or not files or len(files) > MAX_FILES:
        raise InvalidRequest(f"files must list 1 to {MAX_FILES} relative paths",
                             code="invalid_body")
    for path in files:
        check_relative_path(path, field="files[]")
    single = files == [name]
    prefix = layout.input_upload(uuid.uuid4().hex)
    root = prefix if single else f"{prefix}{name}/"
    try:
        service.create_container(DATA_CONTAINER)
    except ResourceExistsError:
        pass
    sign = _signer(service, datetime.now(UTC) + GRANT_TTL)
    container = service.get_container_client(DATA_CONTAINER)
    grants = []
    for path in files:
        blob_name = f"{root}{path}"
        grants.append({"path": path,
                       "url": f"{container.get_blob_client(blob_name).url}?{sign(blob_name)}"})
    target = f"{prefix}{name}"
    return {"uri": f"azureml://datastores/{DEFAULT_DATASTORE}/paths/{target}",
            "input_type": "uri_file" if single else "uri_folder", "files": grants}


def _signer(service: BlobServiceClient, expiry: datetime):  # noqa: ANN202 - local closure
    # Account key where the connection has one (Azurite); else a user-delegation key.
    permission = BlobSasPermissions(create=True, write=True)
    account = service.account_name
    key = getattr(service.credential, "account_key", None)
    if key:
        return lambda blob: generate_blob_sas(account, DATA_CONTAINER, blob, account_key=key,
                                              permission=permission, expiry=expiry)
    start = datetime.now(UTC) - timedelta(minutes=5)
    delegation = service.get_user_delegation_key(start, expiry)
    return lambda blob: generate_blob_sas(account, DATA_CONTAINER, blob,
                                          user_delegation_key=delegation,
                                          permission=permission, expiry=expiry, start=start)
