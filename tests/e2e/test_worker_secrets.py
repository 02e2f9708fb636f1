"""A scoring script hunting for credentials finds none it can use (a real job on devhost).

The devhost runs as root, as the Functions images run their host, with the secrets a host
holds in Azure in its environment (identity endpoint and header, Application Insights,
auth encryption key) and a storage account whose key is not the emulator's published one,
in an app folder whose local.settings.json holds that connection string. Its workers run as
the deployment's own user (shared/scoring/worker_users.py), never root. The script
(tests/scoring_scripts/credential_hunt.py) searches its environment, every process's /proc
environ and cmdline, the host's folders and its own memory, tries every key and signed URL
it finds, and plants links to host files where the host reads what workers write.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batchfn.client import BatchfnClient
from devhost.azurite import DEV_ACCOUNT, DEV_KEY, Azurite
from devhost.testing import RunningDevHost, running_devhost
from shared.contract import layout
from shared.contract.layout import DATA_CONTAINER, STATE_CONTAINER
from shared.scoring.worker_users import ALLOW_ROOT_SETTING, deployment_user_name
from tests.conftest import REPO, deploy_test_script, wait_until

ENDPOINT = "hunt"
# What the Functions host's environment holds in Azure besides the storage connection.
AZURE_HOST_SECRETS = {
    "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token",
    "IDENTITY_HEADER": "identity-header-secret-0123456789",
    "MSI_ENDPOINT": "http://127.0.0.1:9/msi/token",
    "MSI_SECRET": "identity-header-secret-0123456789",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=insights-secret-0123456789",
    "WEBSITE_AUTH_ENCRYPTION_KEY": "auth-encryption-secret-0123456789",
    "CONTAINER_APP_REPLICA_NAME": "replica-1",
}
OTHER_BLOB = "hunt-other/not-yours.txt"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory) -> Iterator[Azurite]:
    key = base64.b64encode(os.urandom(64)).decode()
    with Azurite(location=tmp_path_factory.mktemp("azurite-hunt"), account_key=key) as server:
        yield server


@pytest.fixture(scope="module")
def app_root(azurite, worker_tmp) -> Path:
    """The app folder: host.json and a developer's local.settings.json (0600)."""
    root = worker_tmp("hunt-app")
    root.chmod(0o755)
    shutil.copy(REPO / "host.json", root / "host.json")
    settings = root / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "AzureWebJobsStorage": azurite.connection_string,
        "THIRD_PARTY_API_KEY": "third-party-secret-0123456789"}}))
    settings.chmod(0o600)
    return root


@pytest.fixture(scope="module")
def host(azurite, app_root, worker_tmp, worker_user_python) -> Iterator[RunningDevHost]:
    env = {**AZURE_HOST_SECRETS, "BATCHFN_WORK_DIR": str(worker_tmp("hunt-work") / "work"),
           ALLOW_ROOT_SETTING: "0"}
    with running_devhost(script_root=app_root, connection_string=azurite.connection_string,
                         env=env, python=worker_user_python) as running:
        yield running


def test_a_hostile_script_finds_no_credential_it_can_use(azurite, app_root, host, tmp_path):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    data = blobs.get_container_client(DATA_CONTAINER)
    data.create_container()
    data.upload_blob("hunt/input.txt", b"input")
    data.upload_blob(OTHER_BLOB, b"another job's data")
    client = BatchfnClient(url=host.url, key=host.key)
    client.create_endpoint(document={"name": ENDPOINT})
    deploy_test_script(client, tmp_path, ENDPOINT, "hunter", "credential_hunt.py",
                       {"mini_batch_size": 1, "retry_settings": {"max_retries": 0}}, {
        "HUNT_PATHS": os.pathsep.join(str(p) for p in (
            app_root, host.state_path, azurite.location, Path.home() / ".devhost",
            Path(host.python).parent.parent.parent)),
        "HUNT_BLOB_ENDPOINT": f"http://127.0.0.1:{azurite.blob_port}/{DEV_ACCOUNT}",
        "HUNT_ACCOUNT": DEV_ACCOUNT, "HUNT_OTHER_BLOB": f"{DATA_CONTAINER}/{OTHER_BLOB}",
        "HUNT_DEVHOST_URL": host.url}, set_default=True)

    job = client.invoke(ENDPOINT, "azureml://datastores/workspaceblobstore/paths/hunt")["name"]
    final = client.wait_job(job, timeout=120)
    assert final["status"] == "Completed", (final, host.logs()[-3000:])
    [line] = client.download_job_output(job, "score", tmp_path / "out").read_text().splitlines()
    report = json.loads(line)

    assert report["usable"] == [], report["usable"]
    user = pwd.getpwnam(deployment_user_name(ENDPOINT, "hunter"))
    assert (report["user"], report["uid"]) == (user.pw_name, user.pw_uid)
    assert report["secret_like_variables"] == []
    # It did look: every process's command line, its own environment's siblings at most,
    assert report["cmdline_read"] > 3
    assert host.pid not in report["environ_read"]
    assert azurite.process.pid not in report["environ_read"]
    assert os.getpid() not in report["environ_read"]
    # the host's files were there but out of reach,
    assert str(app_root / "local.settings.json") in report["files_denied"]
    assert str(host.state_path) in report["files_denied"]
    # and it tried what it found: the published emulator key, its own input's signed URL
    # (which reads that input, and nothing else).
    tried = {(t["kind"], t["source"]) for t in report["tried"]}
    assert ("account key", "guess: the emulator's published key") in tried
    own = [t for t in report["tried"] if t["kind"] == "signed url of its own input"]
    assert own and all(t["reads"] for t in own)
    assert {"signed url on another blob", "signed url listing its container",
            "signed url writing a blob"} <= {kind for kind, _ in tried}
    assert DEV_KEY not in azurite.connection_string

    # The links it planted were not followed: no host file reached the job's output folder
    # or its log.
    folder = final["output"]["score"]
    output = list(blobs.get_container_client(folder["container"]).list_blob_names(
        name_starts_with=folder["folder"]))
    assert any(name.endswith("/hunt-notes.txt") for name in output), output
    assert not any("hunt-link" in name for name in output), output
    state = blobs.get_container_client(STATE_CONTAINER)

    def succeeded_log() -> str:
        return "".join(state.download_blob(name).readall().decode()
                       for name in state.list_blob_names(name_starts_with=layout.logs_prefix(job))
                       if "succeeded" in name)
    text = wait_until(succeeded_log, 30, "the attempt's log")
    assert "the attempt's log was not read" in text
    assert "AzureWebJobsStorage" not in text and "AccountKey" not in text
