"""The tabular MLflow sample: its committed model, inputs and accuracy, scored by the
built-in scorer by files (as Azure ML) and by rows (input_format csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from samples.breast_cancer.accuracy import accuracy, print_accuracy
from samples.breast_cancer.dataset import SAMPLE_DIR
from samples.breast_cancer.prepare_data import prepare
from shared.contract.mlmodel import read_mlmodel
from shared.scoring.scoring_runtime import MLFLOW_AZUREML_SEPARATOR
from shared.worker.encoding import encode_part
from shared.worker.mlflow import batch_driver
from shared.worker.tabular import failures
from shared.worker.tabular.passthrough import attach_passthrough
from shared.worker.tabular.read import BatchPiece, TableReader
from shared.worker.tabular.sources import LocalFileSource
from shared.worker.tabular.split import RowBatcher, plan_table

DEPLOYMENT = SAMPLE_DIR / "deployment-mlflow"
MIN_ACCURACY = 0.95


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return prepare(tmp_path_factory.mktemp("cancer-data"))


@pytest.fixture
def driver(monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(DEPLOYMENT))  # holds model/
    batch_driver.init()
    return batch_driver


def test_the_deployment_is_azure_ml_s_mlflow_layout():
    document = yaml.safe_load((DEPLOYMENT / "deployment.yml").read_text())
    assert "code_configuration" not in document and "environment" not in document
    assert document["model"] == {"name": "cancer-classifier-mlflow", "type": "mlflow_model",
                                 "path": "model"}
    model = read_mlmodel(DEPLOYMENT / "model")
    assert model.flavors == ("python_function", "sklearn")
    assert model.signature == "columns" and len(model.input_columns) == 30
    assert sum(p.stat().st_size for p in (DEPLOYMENT / "model").iterdir()) < 20_000


def test_a_folder_of_csv_files_scores_file_by_file(tmp_path, inputs, driver, capsys):
    folder = inputs["folder"]
    lines = []
    files = sorted(str(p) for p in folder.iterdir())
    for batch in (files[:2], files[2:]):  # mini_batch_size 2, as the deployment says
        part = encode_part(driver.run(batch), False, "azureml", MLFLOW_AZUREML_SEPARATOR)
        lines += part.data.decode().splitlines()
    output = tmp_path / "predictions.csv"
    output.write_text("\n".join(lines) + "\n")

    value = print_accuracy(output, inputs["labels"])

    assert len(lines) == 171
    assert value >= MIN_ACCURACY
    assert capsys.readouterr().out.startswith("accuracy of predictions.csv: ")


def test_the_parquet_file_scores_with_real_columns(tmp_path, inputs, driver):
    table = driver.run([str(p) for p in inputs["parquet_folder"].iterdir()])
    output = tmp_path / "predictions.parquet"
    table.to_parquet(output)

    value, rows = accuracy(output, inputs["labels"])

    assert rows == 171 and value >= MIN_ACCURACY


def test_one_csv_split_by_rows_scores_every_row_once_in_order(tmp_path, inputs, driver):
    source = LocalFileSource(inputs["single_csv"])
    batcher: RowBatcher[str] = RowBatcher(50)
    plan = plan_table(source, "csv", 50, first_range_rows=batcher.room)
    batches = batcher.add("cancer-unlabeled.csv", plan.ranges) + [batcher.finish()]
    reader = TableReader()
    outputs = []
    for batch in batches:
        rows = reader.read_batch([BatchPiece(p.file, source, "csv", p.range) for p in batch])
        with failures.collecting() as collected:
            result = driver.run(rows.frame)
        assert not rows.failed and not collected.items
        outputs.append(attach_passthrough(rows.frame, result, ["mean radius"]))
    output = tmp_path / "predictions.csv"
    merged = pd.concat(outputs, ignore_index=True)
    merged.to_csv(output, index=False)

    value, rows = accuracy(output, inputs["labels"])

    assert [len(b) for b in batches] == [1, 1, 1, 1]
    assert [b[0].range.rows for b in batches] == [50, 50, 50, 21]
    assert merged["row"].tolist() == list(range(171))
    assert rows == 171 and value >= MIN_ACCURACY
