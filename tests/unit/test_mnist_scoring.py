"""The MNIST sample's scoring scripts, called as Azure ML calls them: init() then run().

Each framework runs in its own subprocess (as a batchfn worker would), with
AZUREML_MODEL_DIR set to the deployment folder, which contains the `model` folder, and
the code folder on sys.path. One subprocess per framework scores every scenario.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samples.mnist.dataset import load_digits, read_labels, scoring_sample, write_png_folder

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO / "samples" / "mnist"
SCORED_FILES = 200

# Runs in the subprocess (cwd: the repo): argv = code folder, scenarios JSON file. Prints one
# JSON line; "azureml_output" is what the platform's append_row writes for the returned frame.
WORKER = """
import json, sys
from shared.worker.encoding import encode_part
sys.path.insert(0, sys.argv[1])
import batch_driver
batch_driver.init()
report = {}
for name, files in json.load(open(sys.argv[2])).items():
    try:
        frame = batch_driver.run(files)
        report[name] = {
            "columns": list(frame.columns),
            "dtypes": {column: frame[column].dtype.kind for column in frame.columns},
            "rows": frame.astype({"class": "int64", "probability": "float64"}).values.tolist(),
            "azureml_output": encode_part(frame, False, "azureml").data.decode(),
        }
    except Exception as error:
        report[name] = {"error": type(error).__name__, "message": str(error)}
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("mnist")
    sample = scoring_sample(load_digits())
    write_png_folder(sample.subset(np.arange(SCORED_FILES)), folder / "pngs", folder / "labels.csv")
    good = sorted(str(path) for path in (folder / "pngs").iterdir())
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    Image.new("L", (32, 32)).save(folder / "wrong-size.png")
    Image.new("RGB", (28, 28), (255, 255, 255)).save(folder / "colour.png")
    return {
        "sample": good,
        "single": good[:1],
        "empty": [],
        "broken": [good[0], str(folder / "broken.png")],
        "missing": [str(folder / "missing.png")],
        "wrong_size": [str(folder / "wrong-size.png")],
        "colour": [str(folder / "colour.png")],
        "labels_file": [str(folder / "labels.csv")],
    }


@pytest.fixture(scope="module", params=["torch", "keras"])
def report(request: pytest.FixtureRequest, scenarios, tmp_path_factory) -> dict:
    deployment = SAMPLE_DIR / f"deployment-{request.param}"
    scenario_file = tmp_path_factory.mktemp("scenarios") / "scenarios.json"
    scenario_file.write_text(json.dumps(scenarios))
    env = {**os.environ, "AZUREML_MODEL_DIR": str(deployment), "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, str(deployment / "code"), str(scenario_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line.removeprefix("REPORT "))


def test_sample_accuracy_and_row_format(report, scenarios) -> None:
    result = report["sample"]
    assert result["columns"] == ["file", "class", "probability"]
    assert result["dtypes"]["class"] in "iu"
    assert result["dtypes"]["probability"] == "f"
    rows = result["rows"]
    assert [row[0] for row in rows] == [os.path.basename(path) for path in scenarios["sample"]]
    assert all(0 <= row[1] <= 9 for row in rows)
    assert all(0.0 < row[2] <= 1.0 for row in rows)
    labels = read_labels(Path(scenarios["sample"][0]).parent.parent / "labels.csv")
    accuracy = np.mean([labels[file] == predicted for file, predicted, _ in rows])
    assert accuracy >= 0.95


def test_output_lines_are_azure_ml_append_row_format(report, scenarios) -> None:
    lines = report["sample"]["azureml_output"].splitlines()
    assert len(lines) == SCORED_FILES
    pattern = re.compile(r"^\d{5}\.png [0-9] (0\.\d+|1\.0)$")  # <file> <class> <probability>
    assert [line for line in lines if not pattern.match(line)] == []
    assert lines[0].split(" ")[0] == os.path.basename(scenarios["sample"][0])


def test_batch_of_one_and_empty_batch(report) -> None:
    assert len(report["single"]["rows"]) == 1
    assert report["empty"]["rows"] == []
    assert report["empty"]["columns"] == ["file", "class", "probability"]


def test_colour_image_is_scored_as_greyscale(report) -> None:
    assert report["colour"]["rows"][0][0] == "colour.png"


@pytest.mark.parametrize(
    ("scenario", "file_name", "reason"),
    [
        ("broken", "broken.png", "cannot identify image file"),
        ("missing", "missing.png", "No such file"),
        ("wrong_size", "wrong-size.png", "expected a 28x28 image, got 32x32"),
        ("labels_file", "labels.csv", "cannot identify image file"),
    ],
)
def test_unreadable_input_fails_the_batch_naming_the_file(
    report, scenario: str, file_name: str, reason: str
) -> None:
    result = report[scenario]
    assert result["error"] == "ValueError"
    assert f"cannot score {file_name}" in result["message"]
    assert reason in result["message"]
