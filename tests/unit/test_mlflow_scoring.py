"""The built-in MLflow scorer on real MLflow models and real files, through init()/run()."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import Schema, TensorSpec
from PIL import Image
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shared.contract.errors import Unprocessable
from shared.contract.mlmodel import is_mlflow_model_folder, parse_mlmodel, read_mlmodel
from shared.scoring.scoring_runtime import MLFLOW_AZUREML_SEPARATOR
from shared.worker.encoding import encode_part
from shared.worker.mlflow import batch_driver
from shared.worker.mlflow.scorer import model_folder
from shared.worker.tabular import failures
from shared.worker.tabular.failures import NoCollector
from shared.worker.tabular.passthrough import attach_passthrough
from shared.worker.tabular.read import BatchPiece, TableReader
from shared.worker.tabular.sources import LocalFileSource
from shared.worker.tabular.split import plan_table

DATA = load_breast_cancer(as_frame=True)
FEATURES: pd.DataFrame = DATA.data
LABELS: pd.Series = DATA.target


class MeanPixel(mlflow.pyfunc.PythonModel):
    """An image model: the mean of each image's pixels."""

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002 - MLflow's API
        images = np.asarray(model_input, dtype=float)
        return images.reshape(len(images), -1).mean(axis=1)


def save_sklearn_model(model_dir: Path, serialization_format: str) -> object:
    """Fit a classifier; save it to `model_dir`/model as an MLflow model with a signature."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(FEATURES, LABELS)
    mlflow.sklearn.save_model(model, str(model_dir / "model"),
                              signature=infer_signature(FEATURES, model.predict(FEATURES)),
                              serialization_format=serialization_format,
                              pip_requirements=["scikit-learn"])  # no inference run
    return model


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory) -> tuple[Path, object]:
    """AZUREML_MODEL_DIR holding model/, an MLflow sklearn model with a column signature.

    Saved with cloudpickle, which loads faster than MLflow's default skops format (one
    test below covers skops)."""
    model_dir = tmp_path_factory.mktemp("sklearn-model")
    return model_dir, save_sklearn_model(model_dir, "cloudpickle")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("image-model")
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 8, 8))]))
    mlflow.pyfunc.save_model(str(model_dir / "model"), python_model=MeanPixel(),
                             signature=signature, pip_requirements=["numpy"])
    return model_dir


@pytest.fixture
def driver(monkeypatch):
    """The driver, initialised with a model folder by `load(model_dir)`."""
    def load(model_dir: Path):
        monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
        batch_driver.init()
        return batch_driver
    return load


def azureml_lines(table: pd.DataFrame) -> list[str]:
    """The lines the worker writes of run()'s return in the default (azureml) format."""
    part = encode_part(table, False, "azureml", MLFLOW_AZUREML_SEPARATOR)
    return part.data.decode().splitlines()


def write_inputs(folder: Path) -> list[str]:
    folder.mkdir(exist_ok=True)
    csv_path, parquet_path = folder / "part-0.csv", folder / "part-1.parquet"
    FEATURES.iloc[:40].to_csv(csv_path, index=False)
    FEATURES.iloc[40:100].to_parquet(parquet_path, index=False)
    return [str(csv_path), str(parquet_path)]


def test_csv_and_parquet_files_score_as_azure_ml_lines(tmp_path, sklearn_model, driver):
    model_dir, model = sklearn_model
    paths = write_inputs(tmp_path / "in")

    lines = azureml_lines(driver(model_dir).run(paths))

    expected = model.predict(FEATURES.iloc[:100])
    assert len(lines) == 100
    assert lines[0] == f"0,{expected[0]},part-0.csv"
    assert lines[39] == f"39,{expected[39]},part-0.csv"
    assert lines[40] == f"0,{expected[40]},part-1.parquet"
    parsed = pd.read_csv(pd.io.common.StringIO("\n".join(lines)),
                         names=["row", "prediction", "file"])  # as Azure ML's notebook reads it
    assert parsed["prediction"].tolist() == expected.tolist()


def test_a_model_in_mlflow_s_default_skops_format_scores(tmp_path, driver):
    model = save_sklearn_model(tmp_path, "skops")
    path = tmp_path / "rows.csv"
    FEATURES.iloc[:10].to_csv(path, index=False)

    lines = azureml_lines(driver(tmp_path).run([str(path)]))

    assert [line.split(",")[1] for line in lines] == \
        [str(p) for p in model.predict(FEATURES.iloc[:10])]


def test_run_returns_azure_ml_s_columns(tmp_path, sklearn_model, driver):
    model_dir, model = sklearn_model
    paths = write_inputs(tmp_path / "in")

    table = driver(model_dir).run(paths)

    assert list(table.columns) == ["row", "prediction", "file_name"]
    assert table["row"].tolist() == list(range(40)) + list(range(60))
    assert table["prediction"].tolist() == model.predict(FEATURES.iloc[:100]).tolist()
    assert set(table["file_name"]) == {"part-0.csv", "part-1.parquet"}


def test_a_file_of_another_type_fails_alone_when_the_worker_collects(tmp_path, sklearn_model,
                                                                   driver):
    model_dir, _ = sklearn_model
    paths = write_inputs(tmp_path / "in")
    notes = tmp_path / "in" / "notes.avro"
    notes.write_bytes(b"\x00")

    scorer = driver(model_dir)
    with failures.collecting() as collected:
        table = scorer.run([paths[0], str(notes)])

    assert len(table) == 40
    assert [(f.file, f.row) for f in collected.items] == [(str(notes), None)]
    assert collected.items[0].error.startswith(
        "file type 'avro' is not supported by the built-in MLflow scorer (it reads .bmp, "
        ".csv, .gif, .jpeg, .jpg, .parquet, .png, .pqt, .tif, .tiff)")
    with pytest.raises(NoCollector, match="/notes.avro: file type 'avro' is not supported"):
        scorer.run([str(notes)])


def test_the_signature_types_fail_single_rows_not_the_file(tmp_path, sklearn_model, driver):
    model_dir, model = sklearn_model
    frame = FEATURES.iloc[:5].astype(object)
    frame.iloc[2, 0] = "not a number"
    path = tmp_path / "typed.csv"
    frame.to_csv(path, index=False)

    with failures.collecting() as collected:
        table = driver(model_dir).run([str(path)])

    assert table["row"].tolist() == [0, 1, 3, 4]
    assert [(f.file, f.row, f.error) for f in collected.items] == [
        (str(path), 2, "column 'mean radius': 'not a number' is not a valid double")]


def test_a_missing_signature_column_fails_every_row(tmp_path, sklearn_model, driver):
    model_dir, _ = sklearn_model
    path = tmp_path / "narrow.csv"
    FEATURES.iloc[:7].drop(columns=["mean area", "worst area"]).to_csv(path, index=False)

    with failures.collecting() as collected:
        table = driver(model_dir).run([str(path)])

    assert table.empty
    assert [(f.file, f.row, f.rows) for f in collected.items] == [(str(path), 0, 7)]
    assert "needs column(s) mean area, worst area" in collected.items[0].error


def test_unparseable_csv_rows_are_reported_with_their_row_number(tmp_path, sklearn_model,
                                                                driver):
    model_dir, _ = sklearn_model
    path = tmp_path / "broken.csv"
    FEATURES.iloc[:3].to_csv(path, index=False)
    with path.open("a") as file:
        file.write("1,2,3\n")

    with failures.collecting() as collected:
        table = driver(model_dir).run([str(path)])

    assert len(table) == 3
    assert [(f.row, f.error) for f in collected.items] == [
        (3, "expected 30 fields as in the header, found 3")]


def test_tabular_rows_score_with_their_file_and_row_numbers(tmp_path, sklearn_model, driver):
    model_dir, model = sklearn_model
    frame = FEATURES.iloc[:250].copy()
    frame.insert(0, "patient_id", [f"p{i}" for i in range(250)])
    path = tmp_path / "patients.csv"
    frame.to_csv(path, index=False)
    source = LocalFileSource(path)
    plan = plan_table(source, "csv", 100)
    batch = TableReader().read_batch([BatchPiece("ward/patients.csv", source, "csv",
                                                 plan.ranges[1])])

    table = driver(model_dir).run(batch.frame)
    output = attach_passthrough(batch.frame, table, ["patient_id"])

    assert list(output.columns) == ["patient_id", "row", "prediction", "file_name"]
    assert output["patient_id"].tolist() == [f"p{i}" for i in range(100, 200)]
    assert output["row"].tolist() == list(range(100, 200))
    assert (output["file_name"] == "ward/patients.csv").all()
    assert output["prediction"].tolist() == model.predict(FEATURES.iloc[100:200]).tolist()


def test_images_are_arrays_shaped_by_the_tensor_signature(tmp_path, image_model, driver):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 10, dtype=np.uint8)).save(folder / "ten.png")
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(folder / "two-hundred.bmp")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "rgb.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    paths = [str(folder / n) for n in ("ten.png", "two-hundred.bmp", "rgb.png", "broken.jpg")]

    with failures.collecting() as collected:
        lines = azureml_lines(driver(image_model).run(paths))

    assert lines == ["10.0,ten.png", "200.0,two-hundred.bmp"]
    assert [f.file for f in collected.items] == paths[2:]
    assert collected.items[0].error == ("the image's shape (8, 8, 3) does not fit the "
                                        "model's tensor shape (-1, 8, 8)")
    assert collected.items[1].error.startswith("cannot read the image:")


def test_azureml_lines_quote_multi_valued_predictions():
    table = pd.DataFrame({"row": pd.array([0, None], dtype="Int64"),
                          "prediction": [[0.25, 0.75], "a,b"], "file_name": ["x.csv", "y.png"]})
    assert azureml_lines(table) == ['0,"[0.25, 0.75]",x.csv', ',"a,b",y.png']


def test_the_driver_runs_unchanged_in_a_worker_process(tmp_path, sklearn_model):
    from shared.scoring.pool import WorkerPool
    from shared.worker.protocol import WorkerSpec

    model_dir, model = sklearn_model
    script = Path(batch_driver.__file__)
    spec = WorkerSpec(script_path=str(script), code_dir=str(tmp_path), model_dir=str(model_dir),
                      azureml_separator=MLFLOW_AZUREML_SEPARATOR)
    pool = WorkerPool(spec, 1, scratch_dir=tmp_path / "logs")
    paths = write_inputs(tmp_path / "in")
    notes = tmp_path / "in" / "notes.txt"
    notes.write_text("no rows here")
    try:
        result = pool.run([*paths, str(notes)], 120, str(tmp_path), output_format="azureml",
                          names=["in/part-0.csv", "in/part-1.parquet", "in/notes.txt"])
    finally:
        pool.close()

    assert result.status == "succeeded", result.log
    assert result.rows == 100
    lines = result.part.data.decode().splitlines()
    assert lines[99] == f"59,{model.predict(FEATURES.iloc[[99]])[0]},part-1.parquet"
    # The unsupported file fails alone, named as the job knows it; the others count.
    assert result.failed_inputs == 1
    assert [(f.file, f.row) for f in result.failed] == [("in/notes.txt", None)]


def test_mlmodel_without_a_pyfunc_flavor_is_refused():
    with pytest.raises(Unprocessable, match="has no python_function flavor \\(it has: "
                                            "keras\\)") as caught:
        parse_mlmodel("flavors:\n  keras:\n    keras_version: 3\n")
    assert caught.value.code == "invalid_mlflow_model"
    for text, problem in [("flavors: [", "is not valid YAML"), ("name: x", "no 'flavors'"),
                          ("flavors:\n  python_function: {}\nsignature:\n  inputs: '[1'\n",
                           "inputs are not JSON")]:
        with pytest.raises(Unprocessable, match=problem):
            parse_mlmodel(text)


def test_mlmodel_signatures_are_read_without_mlflow(sklearn_model, image_model):
    model_dir, _ = sklearn_model
    columns = read_mlmodel(model_dir / "model")
    assert columns.loads_as_pyfunc and columns.signature == "columns"
    assert columns.input_columns[:2] == ("mean radius", "mean texture")
    assert read_mlmodel(image_model / "model").signature == "tensors"
    assert parse_mlmodel("flavors:\n  python_function: {}\n").signature == "none"


def test_the_model_folder_is_found_under_the_model_dir(tmp_path, sklearn_model):
    model_dir, _ = sklearn_model
    assert model_folder(model_dir) == model_dir / "model"
    assert model_folder(model_dir / "model") == model_dir / "model"
    assert is_mlflow_model_folder(model_dir / "model") and not is_mlflow_model_folder(model_dir)
    with pytest.raises(FileNotFoundError, match="is this an MLflow model"):
        model_folder(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(FileNotFoundError, match="more than one MLmodel"):
        model_folder(tmp_path)
