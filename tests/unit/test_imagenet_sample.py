"""The ImageNet-style sample: its photos, its ResNet-50, its scoring script on a CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from samples.imagenet.prepare_data import make_jpegs
from shared.contract.deployment_spec import DeploymentSpec, load_document
from shared.contract.script_check import check_scoring_script

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "imagenet" / "deployment"


def test_photos_are_varied_real_jpegs_and_the_same_for_a_seed(tmp_path):
    from PIL import Image

    first = make_jpegs(tmp_path / "a", 6, min_side=40, max_side=90, seed=3)
    again = make_jpegs(tmp_path / "b", 6, min_side=40, max_side=90, seed=3)

    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    sizes = set()
    for path in first:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert 40 <= image.width <= 90 and 40 <= image.height <= 90
            sizes.add(image.size)
    assert len(sizes) > 1
    with pytest.raises(ValueError):
        make_jpegs(tmp_path / "c", 1, min_side=90, max_side=40)


def test_the_deployment_is_an_azure_ml_deployment_with_a_valid_script():
    spec = DeploymentSpec.from_document(load_document(SAMPLE / "deployment.yml"))
    assert (spec.scoring_script, spec.settings.mini_batch_size) == ("batch_driver.py", 256)
    assert spec.settings.max_concurrency_per_instance == 2
    check_scoring_script((SAMPLE / "code" / "batch_driver.py").read_text(), "batch_driver.py")


def test_the_plain_torch_resnet50_has_resnet50s_parameters(monkeypatch):
    monkeypatch.syspath_prepend(str(SAMPLE / "code"))
    from resnet import ResNet50

    model = ResNet50()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's count


def test_the_script_scores_jpegs_on_a_cpu_and_names_a_broken_file(tmp_path, monkeypatch):
    model_dir = tmp_path / "model-dir"
    shutil.copytree(SAMPLE / "model", model_dir / "model")
    config = json.loads((model_dir / "model" / "config.json").read_text())
    config.update(image_size=32, resize=36)
    (model_dir / "model" / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.syspath_prepend(str(SAMPLE / "code"))
    import batch_driver

    photos = make_jpegs(tmp_path / "photos", 3, min_side=40, max_side=80)
    batch_driver.init()
    frame = batch_driver.run([str(p) for p in photos])

    assert list(frame.columns) == ["file", "class", "probability"]
    assert list(frame["file"]) == [p.name for p in photos]
    assert frame["class"].between(0, 999).all() and frame["probability"].between(0, 1).all()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode broken.jpg"):
        batch_driver.run([str(photos[0]), str(broken)])
