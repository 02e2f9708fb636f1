"""Where a job may read and write: datastores in; its jobs folder, datastores or its drop's
_output/ out; nothing else however a URL is spelled."""

from __future__ import annotations

import pytest

from shared.contract.errors import InvalidRequest, http_status
from shared.contract.job_records import BlobLocation
from shared.control.blob_drop import is_marker
from shared.control.datastores import (
    DATASTORES_SETTING,
    Datastore,
    DatastoreSettingError,
    StorageBoundaries,
    parse_datastores,
)

ACCOUNT = "http://127.0.0.1:10000/devstoreaccount1/"
BOUNDARIES = StorageBoundaries.from_settings({DATASTORES_SETTING: "images=raw-images"})
DROP = BlobLocation("batchfn-drop", "ep1/batch-7")


def test_inputs_come_from_datastores_by_uri_or_url():
    default = BOUNDARIES.resolve_input("azureml://subscriptions/s/resourcegroups/r/workspaces/w/"
                                       "datastores/workspaceblobstore/paths/a/b", ACCOUNT)
    assert default == BlobLocation("batchfn-data", "a/b")
    assert BOUNDARIES.resolve_input("azureml://datastores/images/paths/cats/", ACCOUNT) == \
        BlobLocation("raw-images", "cats")
    assert BOUNDARIES.resolve_input(ACCOUNT + "raw-images/cats/x.png", ACCOUNT) == \
        BlobLocation("raw-images", "cats/x.png")
    # Percent-encoding is decoded once, and then has to name an allowed container.
    assert BOUNDARIES.resolve_input(ACCOUNT + "batchfn-%64ata/in", ACCOUNT) == \
        BlobLocation("batchfn-data", "in")


@pytest.mark.parametrize("uri", [
    # the Functions host's keys and receipts, the task hub, batchfn's own state
    ACCOUNT + "azure-webjobs-secrets/",
    ACCOUNT + "azure-webjobs-secrets/devhost/host.json",
    ACCOUNT + "%61zure-webjobs-secrets/devhost/host.json",
    ACCOUNT + "AZURE-WEBJOBS-SECRETS/devhost/host.json",
    ACCOUNT + "azure-webjobs-secrets./x",
    ACCOUNT + "azure-webjobs-hosts/x",
    ACCOUNT + "batchfn-leases/x",
    ACCOUNT + "batchfn-largemessages/x",
    ACCOUNT + "batchfn-registry/endpoints/",
    ACCOUNT + "batchfn-assets/models/",
    ACCOUNT + "batchfn-state/job/x",
    # other jobs' outputs and the drop container (a job cannot start jobs)
    ACCOUNT + "batchfn-jobs/other-job/",
    ACCOUNT + "batchfn-drop/ep1/batch-7/",
    # a container of the account that no datastore names
    ACCOUNT + "data/x",
    # walking out of an allowed container
    ACCOUNT + "batchfn-data/../azure-webjobs-secrets/x",
    ACCOUNT + "batchfn-data/%2e%2e/azure-webjobs-secrets/x",
    ACCOUNT + "batchfn-data/a/%2E%2E/b",
    ACCOUNT + "batchfn-data/a/./b",
    ACCOUNT + "batchfn-data/a./b",
    ACCOUNT + "batchfn-data/a\\..\\b",
    ACCOUNT + "batchfn-data/a%00b",
    ACCOUNT + "batchfn-data/a%0ab",
    # other hosts, accounts, schemes; SAS tokens; other URI kinds
    "http://127.0.0.1:10001/devstoreaccount1/batchfn-data/x",
    "http://127.0.0.1:10000/otheraccount/batchfn-data/x",
    "https://127.0.0.1:10000/devstoreaccount1/batchfn-data/x",
    "http://user@127.0.0.1:10000/devstoreaccount1/batchfn-data/x",
    "http://127.0.0.1.:10000/devstoreaccount1/batchfn-data/x",
    ACCOUNT + "batchfn-data/x?sig=abc",
    "azureml://datastores/nope/paths/x",
    "azureml://datastores/workspaceblobstore/paths/../x",
    "azureml:my-data:1",
    "file:///etc/passwd",
    "",
    None,
    ACCOUNT + "batchfn-data/" + "x" * 3000,
])
def test_inputs_from_anywhere_else_are_refused(uri):
    with pytest.raises(InvalidRequest) as refused:
        BOUNDARIES.resolve_input(uri, ACCOUNT)
    assert http_status(refused.value) == 400


def test_outputs_go_to_the_jobs_own_folder_or_a_datastore():
    assert BOUNDARIES.resolve_output(ACCOUNT + "batchfn-jobs/job-1/sub", ACCOUNT,
                                     job_id="job-1") == BlobLocation("batchfn-jobs", "job-1/sub")
    assert BOUNDARIES.resolve_output("azureml://datastores/images/paths/scored", ACCOUNT,
                                     job_id="job-1") == BlobLocation("raw-images", "scored")
    for other in ("batchfn-jobs/job-2", "batchfn-jobs/job-10", "batchfn-jobs/",
                  "batchfn-state/job-1", "batchfn-drop/ep1/batch-7/_output",
                  "azure-webjobs-secrets/x"):
        with pytest.raises(InvalidRequest):
            BOUNDARIES.resolve_output(ACCOUNT + other, ACCOUNT, job_id="job-1")


def test_a_drop_job_reads_its_folder_and_writes_only_under_its_output_folder():
    assert BOUNDARIES.resolve_input(ACCOUNT + "batchfn-drop/ep1/batch-7", ACCOUNT,
                                    drop_folder=DROP) == DROP
    assert BOUNDARIES.resolve_output(ACCOUNT + "batchfn-drop/ep1/batch-7/_output/x", ACCOUNT,
                                     job_id="j", drop_folder=DROP) == \
        BlobLocation("batchfn-drop", "ep1/batch-7/_output/x")
    for other in ("batchfn-drop/ep1/batch-8", "batchfn-drop/ep1", "batchfn-drop/ep1/batch-7/x"):
        with pytest.raises(InvalidRequest):
            BOUNDARIES.resolve_input(ACCOUNT + other, ACCOUNT, drop_folder=DROP)
    for other in ("batchfn-drop/ep1/batch-7", "batchfn-drop/ep1/batch-7/_outputs",
                  "batchfn-drop/ep1/batch-8/_output"):
        with pytest.raises(InvalidRequest):
            BOUNDARIES.resolve_output(ACCOUNT + other, ACCOUNT, job_id="j", drop_folder=DROP)


def test_nothing_under_an_output_folder_starts_a_job():
    assert is_marker("ep1/batch-7/_start")
    assert not is_marker("ep1/batch-7/_output/_start")
    assert not is_marker("ep1/batch-7/_output/deeper/_start")


def test_operator_datastores_are_parsed_and_reserved_containers_refused():
    assert parse_datastores(" images = raw-images , tables=curated-tables,") == (
        Datastore("images", "raw-images"), Datastore("tables", "curated-tables"))
    assert parse_datastores("") == ()
    assert parse_datastores("also=batchfn-data") == (Datastore("also", "batchfn-data"),)
    for bad in ("images", "images=", "=raw", "1x=raw", "x=Raw", "x=a--b",
                "x=azure-webjobs-secrets", "x=batchfn-state", "x=batchfn-leases",
                "x=app-package-abc", "workspaceblobstore=raw", "x=raw,x=other"):
        with pytest.raises(DatastoreSettingError):
            parse_datastores(bad)


def test_the_listing_names_every_datastore():
    listing = BOUNDARIES.describe(ACCOUNT)
    assert [(d["name"], d["container"], d["default"]) for d in listing["value"]] == [
        ("workspaceblobstore", "batchfn-data", True), ("images", "raw-images", False)]
    assert listing["value"][1]["url"] == ACCOUNT + "raw-images/"
