"""Tabular jobs and MLflow deployments end to end: devhost + Azurite + the CLI.

Azure ML's MLflow flow unchanged (a model folder saved with `mlflow.sklearn.save_model`, a
deployment YAML without code_configuration, a folder of CSV files) and what batchfn adds:
one large CSV split into mini-batches of rows, every row once and in order; unparseable
rows in the errors report with their file and row; error_threshold counting rows;
passthrough columns.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from batchfn.cli import cli
from batchfn.client import BatchfnClient
from samples.breast_cancer.accuracy import accuracy
from samples.breast_cancer.dataset import SAMPLE_DIR
from samples.breast_cancer.prepare_data import prepare
from tests.conftest import deploy_test_script, ensure_compute

ENDPOINT = "tabular-e2e"
MIN_ACCURACY = 0.95
BIG_ROWS = 200_000


@pytest.fixture(scope="module")
def env(host) -> dict[str, str]:
    return {"BATCHFN_URL": host.url, "DEVHOST_STATE_DIR": str(host.state_path.parent)}


@pytest.fixture(scope="module")
def client(host, scratch) -> BatchfnClient:
    client = BatchfnClient(url=host.url, key=host.key)
    ensure_compute(client)  # the sample deployment's batch-cluster
    client.create_endpoint(document={"name": ENDPOINT})
    deploy_test_script(client, scratch, ENDPOINT, "rows", "rows.py",
                       {"mini_batch_size": 1000, "input_format": "csv",
                        "max_concurrency_per_instance": 2}, set_default=True)
    return client


@pytest.fixture(scope="module")
def cancer_data(scratch) -> dict[str, Path]:
    return prepare(scratch / "cancer-data")


def cli_run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_mlflow_tutorial_with_its_registered_model_and_data(env, client, scratch,
                                                              cancer_data, tmp_path):
    # Azure ML's MLflow tutorial registers the model and the data, then invokes the data
    # asset; these are its `az ml` lines with the sample's names (docs/tutorial.md).
    endpoint = "cancer-registered"
    model = json.loads(cli_run(env, "model", "create", "--name", "cancer-classifier-mlflow",
                               "--type", "mlflow_model", "--path",
                               str(SAMPLE_DIR / "deployment-mlflow" / "model")))
    cli_run(env, "data", "create", "--name", "cancer-dataset-unlabeled", "--type",
            "uri_folder", "--path", str(cancer_data["folder"]))
    cli_run(env, "batch-endpoint", "create", "-n", endpoint, "-f",
            str(SAMPLE_DIR / "endpoint.yml"))
    deployment = json.loads(cli_run(
        env, "batch-deployment", "create",
        "--file", str(SAMPLE_DIR / "deployment-mlflow" / "deployment.yml"),
        "--endpoint-name", endpoint, "--set-default"))
    assert deployment["model"]["version"] == model["version"]  # the registered one
    job = cli_run(env, "batch-endpoint", "invoke", "--name", endpoint, "--input",
                  "azureml:cancer-dataset-unlabeled@latest", "--query", "name",
                  "-o", "tsv").strip()
    cli_run(env, "job", "stream", "-n", job)
    cli_run(env, "job", "download", "--name", job, "--output-name", "score",
            "--download-path", str(tmp_path))
    value, rows = accuracy(tmp_path / "named-outputs" / "score" / "predictions.csv",
                           cancer_data["labels"])
    assert rows == 171 and value >= MIN_ACCURACY


def test_an_mlflow_model_without_a_script_scores_a_folder_of_csv_files(env, client, scratch,
                                                                       cancer_data):
    endpoint = "cancer-e2e"
    cli_run(env, "batch-endpoint", "create", "--file", str(SAMPLE_DIR / "endpoint.yml"),
            "--name", endpoint)
    deployment = json.loads(cli_run(
        env, "batch-deployment", "create",
        "--file", str(SAMPLE_DIR / "deployment-mlflow" / "deployment.yml"),
        "--endpoint-name", endpoint, "--set-default"))
    assert deployment["code_configuration"] is None
    assert deployment["model"]["name"] == "cancer-classifier-mlflow"

    folder = scratch / "csv-folder"
    shutil.copytree(cancer_data["folder"], folder)
    (folder / "notes.txt").write_text("not a table")
    bad = folder / "zz-bad.csv"
    good = pd.read_csv(folder / "cancer-unlabeled-0.csv").iloc[:2]
    bad.write_text(good.to_csv(index=False) + "1,2,3\n")  # its row 2 has 3 of 30 fields
    job = cli_run(env, "batch-endpoint", "invoke", "--name", endpoint, "--input", str(folder),
                  "--query", "name", "-o", "tsv").strip()
    cli_run(env, "job", "stream", "-n", job)
    final = client.get_job(job)
    assert final["status"] == "Completed", final
    # Files are the unit, as in Azure ML: a file with a failed row counts as failed.
    assert final["progress"]["unit"] == "files"
    assert final["progress"]["inputs"] == {"total": 6, "succeeded": 4, "failed": 2,
                                           "not_started": 0, "pending": 0}

    output = client.download_job_output(job, "score", scratch / "cancer-out")
    lines = output.read_text().splitlines()
    scored = [line for line in lines if not line.endswith(",zz-bad.csv")]
    (scratch / "scored.csv").write_text("\n".join(scored) + "\n")
    value, rows = accuracy(scratch / "scored.csv", cancer_data["labels"])
    assert rows == 171 and value >= MIN_ACCURACY
    assert lines[-2:] == [f"{row},{label},zz-bad.csv" for row, label in
                          zip((0, 1), pd.read_csv(io.StringIO("\n".join(lines[-2:])),
                                                  header=None)[1], strict=True)]
    errors = {(e["file"], e["row"]): e["error"] for e in client.job_errors(job)}
    assert errors[("zz-bad.csv", 2)] == "expected 30 fields as in the header, found 3"
    assert errors[("notes.txt", None)].startswith("file type 'txt' is not supported")


def test_a_large_csv_splits_into_mini_batches_of_rows_every_row_once_in_order(client,
                                                                              scratch):
    big = scratch / "big.csv"
    values = pd.DataFrame({"id": [f"r{i:06d}" for i in range(BIG_ROWS)],
                           "value": range(BIG_ROWS)})
    values.to_csv(big, index=False)
    job = client.invoke(ENDPOINT, big, input_type="uri_file", settings={
        "output_format": "csv", "passthrough_columns": "id"})["name"]
    final = client.wait_job(job, timeout=240)
    assert final["status"] == "Completed", final
    progress = final["progress"]
    assert progress["unit"] == "rows" and "files" not in progress
    assert progress["inputs"] == {"total": BIG_ROWS, "succeeded": BIG_ROWS, "failed": 0,
                                  "not_started": 0, "pending": 0}
    assert progress["mini_batches"]["total"] == BIG_ROWS // 1000
    output = pd.read_csv(client.download_job_output(job, "score", scratch / "big-out"))
    assert list(output.columns) == ["id", "file", "row"]
    assert output["row"].tolist() == list(range(BIG_ROWS))
    assert (output["id"] == values["id"]).all() and (output["file"] == "big.csv").all()


def test_unparseable_rows_are_reported_and_error_threshold_counts_rows(client, scratch):
    folder = scratch / "broken"
    folder.mkdir()
    header, rows = "id,value", [f"r{i},{i}" for i in range(5)]
    rows[2] = "r2,2,extra"  # row 2: a field too many
    (folder / "a.csv").write_text("\n".join([header, *rows]) + "\n")
    (folder / "c.csv").write_text("\n".join([header, "r0,0", "oops", "r2,2"]) + "\n")
    (folder / "_SUCCESS").write_text("")  # a marker, never an input
    (folder / "d.csv.gz").write_bytes(b"\x1f\x8b")  # cannot be split into rows

    job = client.invoke(ENDPOINT, folder, settings={
        "mini_batch_size": 3, "output_format": "csv", "error_threshold": 5,
        "retry_settings": {"max_retries": 0}})["name"]
    final = client.wait_job(job, timeout=90)
    assert final["status"] == "Completed", final
    assert final["progress"]["inputs"]["failed"] == 3  # two rows and the .gz file
    errors = sorted((e["file"], e["row"], e["error"]) for e in client.job_errors(job))
    assert errors == [
        ("a.csv", 2, "expected 2 fields as in the header, found 3"),
        ("c.csv", 1, "expected 2 fields as in the header, found 1"),
        ("d.csv.gz", None, "cannot split d.csv.gz into rows: compressed files (.gz) cannot "
                           "be split into row ranges: decompress it, or write parquet (whose "
                           "compression works per row group)"),
    ]
    output = pd.read_csv(client.download_job_output(job, "score", scratch / "broken-out"))
    assert list(zip(output["file"], output["row"], strict=True)) == [
        ("a.csv", 0), ("a.csv", 1), ("a.csv", 3), ("a.csv", 4), ("c.csv", 0), ("c.csv", 2)]

    strict = client.invoke(ENDPOINT, folder, settings={
        "mini_batch_size": 3, "error_threshold": 2,
        "retry_settings": {"max_retries": 0}})["name"]
    failed = client.wait_job(strict, timeout=90)
    assert failed["status"] == "Failed"
    assert "error_threshold 2 exceeded: 3 rows failed" in failed["reason"]
