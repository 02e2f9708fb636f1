"""The contract of assets and computes: documents, sizes and profiles, versions, data
references, input aliases, and records written before these fields existed."""

from __future__ import annotations

import pytest

from shared.contract.asset_spec import AssetMetadata, AssetSpec, check_version, data_reference
from shared.contract.compute_spec import ComputeSpec, profile_for_size
from shared.contract.deployment_spec import compute_name
from shared.contract.errors import InvalidRequest
from shared.contract.job_records import JobCompute, JobRecord
from shared.contract.registry_records import AssetRef, AssetVersion, DeploymentRecord
from shared.control.computes import ProfileSettingError, ScoringProfiles
from shared.control.datastores import DatastoreSettingError, StorageBoundaries, parse_aliases
from shared.scoring.scoring_profile import served_queue

ACCOUNT = "http://127.0.0.1:10000/devstoreaccount1"


@pytest.mark.parametrize(("size", "profile"), [
    ("Standard_NC4as_T4_v3", "gpu-t4"), ("standard_nc64as_t4_v3", "gpu-t4"),
    ("Standard_NC24ads_A100_v4", "gpu-a100"), ("Standard_ND96amsr_A100_v4", "gpu-a100"),
    ("Standard_ND96asr_v4", "gpu-a100"), ("Standard_DS3_v2", "cpu"),
    ("Standard_D4s_v3", "cpu"), ("Standard_E8ds_v5", "cpu"), ("Standard_F4s_v2", "cpu"),
    ("gpu-a100", "gpu-a100"), ("T4", "gpu-t4"), ("cpu", "cpu"),
])
def test_sizes_map_to_scoring_profiles(size, profile):
    assert profile_for_size(size) == profile


@pytest.mark.parametrize("size", ["Standard_NC6", "Standard_NC6s_v3", "Standard_ND96isr_H100_v5",
                                  "", "x" * 65, 3])
def test_sizes_no_profile_serves_are_refused_with_the_served_ones(size):
    with pytest.raises(InvalidRequest) as refused:
        profile_for_size(size)
    assert refused.value.code == "unsupported_size"
    assert "Standard_NC<n>as_T4_v3" in refused.value.message


def test_a_compute_document_as_azure_ml_writes_it():
    spec = ComputeSpec.from_document({
        "$schema": "https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json",
        "name": "gpu-cluster", "type": "AmlCompute", "size": "Standard_NC4as_T4_v3",
        "min_instances": "1", "max_instances": 4, "tier": "LowPriority",
        "idle_time_before_scale_down": 600, "location": "westeurope",
        "ssh_settings": {"admin_username": "a"}, "colour": "red"})
    assert (spec.name, spec.profile, spec.min_instances, spec.max_instances, spec.tier) == (
        "gpu-cluster", "gpu-t4", 1, 4, "low_priority")
    assert [(i.field, "typo" in i.reason) for i in spec.ignored] == [
        ("$schema", False), ("colour", True), ("location", False), ("ssh_settings", False)]
    defaults = ComputeSpec.from_document({"type": "amlcompute"}, name="batch-cluster")
    assert (defaults.max_instances, defaults.min_instances, defaults.size) == (1, 0, None)


@pytest.mark.parametrize(("document", "code"), [
    ({"name": "k", "type": "kubernetes"}, "unsupported_compute_type"),
    ({"name": "cpu-pool", "min_instances": 3, "max_instances": 2}, "invalid_compute"),
    ({"name": "cpu-pool", "max_instances": 0}, "invalid_compute"),
    ({"name": "cpu-pool", "max_instances": 1001}, "invalid_compute"),
    ({"name": "cpu-pool", "max_instances": True}, "invalid_compute"),
    ({"name": "cpu-pool", "tier": "spot"}, "invalid_compute"),
    ({"name": "c/../d"}, "invalid_name"),
    ({"name": "cpu-pool", "size": "Standard_NV6"}, "unsupported_size"),
])
def test_bad_compute_documents(document, code):
    with pytest.raises(InvalidRequest) as refused:
        ComputeSpec.from_document(document)
    assert refused.value.code == code


def test_a_deployment_names_its_compute_as_azure_ml_does():
    assert compute_name("azureml:batch-cluster") == "batch-cluster"
    assert compute_name("batch-cluster") == "batch-cluster"
    assert compute_name("azureml:/subscriptions/s/resourceGroups/r/providers/Microsoft."
                        "MachineLearningServices/workspaces/w/computes/gpu-cluster") == (
        "gpu-cluster")
    for bad in (3, "azureml:a/b", "x"):
        with pytest.raises(InvalidRequest):
            compute_name(bad)


def test_scoring_profiles_route_pools_to_their_apps_queues():
    single = ScoringProfiles.from_settings({})
    assert single.queue("gpu-a100") == single.queue(None) == "minibatches"
    single.check_served("gpu-a100", "Standard_NC24ads_A100_v4")  # one host serves all
    azure = ScoringProfiles.from_settings({"BATCHFN_SCORING_PROFILES": "gpu-t4, gpu-a100"})
    assert (azure.queue(None), azure.queue("gpu-t4"), azure.queue("gpu-a100")) == (
        "minibatches", "minibatches", "minibatches-gpu-a100")
    with pytest.raises(InvalidRequest) as refused:
        azure.check_served("cpu", "Standard_DS3_v2")
    assert refused.value.code == "profile_not_deployed"
    assert "profiles served: gpu-t4, gpu-a100" in refused.value.message
    for bad in ("gpu-h100", "cpu,cpu"):
        with pytest.raises(ProfileSettingError):
            ScoringProfiles.from_settings({"BATCHFN_SCORING_PROFILES": bad})
    assert served_queue({}) == "minibatches"
    assert served_queue({"BATCHFN_SCORING_PROFILE": "cpu"}) == "minibatches-cpu"
    with pytest.raises(ValueError):
        served_queue({"BATCHFN_SCORING_PROFILE": "tpu"})


def test_versions_and_data_references():
    assert check_version("0007") == "7" and check_version(3) == "3"
    assert check_version("latest", latest=True) == "latest"
    for bad in ("latest", "0", "v1", "1" * 10, True, None, 1.5):
        with pytest.raises(InvalidRequest):
            check_version(bad)
    assert data_reference("azureml:cancer@latest") == ("cancer", "latest")
    assert data_reference("azureml:cancer:2") == ("cancer", "2")
    assert data_reference("azureml:/subscriptions/s/resourceGroups/r/providers/Microsoft."
                          "MachineLearningServices/workspaces/w/data/cancer/versions/4") == (
        "cancer", "4")
    for location in ("azureml://datastores/workspaceblobstore/paths/x", "https://a/b", "data"):
        assert data_reference(location) is None
    for bad in ("azureml:cancer", "azureml:can/cer@latest", "azureml:cancer:0"):
        with pytest.raises(InvalidRequest):
            data_reference(bad)


def test_asset_documents_and_metadata():
    spec = AssetSpec.from_document("data", {
        "$schema": "https://azuremlschemas.azureedge.net/latest/data.schema.json",
        "name": "unlabeled", "type": "URI_FOLDER", "path": "data/unlabeled",
        "description": "d", "tags": {"n": 1}, "datastore": "azureml:x"})
    assert (spec.path, spec.metadata) == ("data/unlabeled", AssetMetadata(
        type="uri_folder", description="d", tags={"n": "1"}))
    assert [item.field for item in spec.ignored] == ["$schema", "datastore"]
    assert AssetMetadata.from_dict("model", {}).type == "custom_model"
    assert AssetMetadata.from_dict("code", {"type": "x"}).type is None
    with pytest.raises(InvalidRequest, match="mltable data assets are not supported"):
        AssetMetadata.from_dict("data", {"type": "mltable"})
    with pytest.raises(InvalidRequest, match="needs a path"):
        AssetSpec.from_document("model", {"name": "m"})


def test_input_aliases_give_urls_a_meaning_inside_the_allow_list():
    boundaries = StorageBoundaries.from_settings({"BATCHFN_INPUT_ALIASES": (
        "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample="
        "azureml:mnist-sample@latest; https://public.example.com/sets="
        "azureml://datastores/workspaceblobstore/paths/mirrors/sets")})
    sample = "https://azuremlexampledata.blob.core.windows.net/data/mnist/sample"
    assert boundaries.unalias(sample + "/") == "azureml:mnist-sample@latest"
    assert boundaries.unalias(sample.replace("https://azuremlexampledata",
                                             "HTTPS://AzureMLExampleData")) == (
        "azureml:mnist-sample@latest")
    assert boundaries.unalias("https://public.example.com/sets/a%20b/c") == (
        "azureml://datastores/workspaceblobstore/paths/mirrors/sets/a b/c")
    assert boundaries.unalias("https://public.example.com/setsx") is None
    assert boundaries.unalias("azureml://datastores/workspaceblobstore/paths/x") is None
    with pytest.raises(InvalidRequest, match="invoke that URL itself"):
        boundaries.unalias(sample + "/00001.png")
    # What an alias leads to still goes through the allow-list.
    with pytest.raises(InvalidRequest, match="not a plain relative path"):
        boundaries.resolve_input(boundaries.unalias("https://public.example.com/sets/../x"),
                                 ACCOUNT)
    for bad in ("ftp://x/y=azureml:a@latest", "https://x/y=azureml://datastores/nope/paths/z",
                "https://x/y?sas=1=azureml:a@latest", "https://x/y=azureml:a", "https://x/y"):
        with pytest.raises(DatastoreSettingError):
            parse_aliases(bad, {"workspaceblobstore"})


def test_jobs_never_write_into_registered_data_assets():
    boundaries = StorageBoundaries()
    with pytest.raises(InvalidRequest, match="registered data assets"):
        boundaries.resolve_output("azureml://datastores/workspaceblobstore/paths/assets/d/x",
                                  ACCOUNT, job_id="j")
    assert boundaries.resolve_output("azureml://datastores/workspaceblobstore/paths/assetsx",
                                     ACCOUNT, job_id="j").path == "assetsx"


def test_records_written_before_assets_and_computes_load_with_defaults():
    content = {"kind": "model", "name": "m", "version": "1", "digest": "d",
               "prefix": "models/m/d/", "root": "model", "files": 1, "size": 3}
    old = AssetVersion.from_dict(content)
    assert (old.content, old.type, old.archived, old.tags) == (AssetRef(**content), None,
                                                              False, {})
    assert AssetVersion.from_dict(old.to_dict()) == old
    deployment = DeploymentRecord.from_dict({
        "name": "d", "endpoint_name": "e", "model": content, "code_configuration": None})
    assert (deployment.compute, deployment.model_reference) == ("default", None)
    job = JobRecord.from_dict({
        "name": "j", "endpoint_name": "e", "deployment_name": "d", "deployment_record": {},
        "input": {"type": "uri_folder", "uri": "u", "location": {"container": "c"}},
        "output": {"score": {"container": "c", "folder": "j"}}, "settings": {},
        "request_digest": "x", "status": "Queued"})
    assert job.compute == JobCompute("default", None, "minibatches")
    assert job.input.data_asset is None
    assert JobRecord.from_dict(job.to_dict()) == job
