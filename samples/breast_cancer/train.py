"""Train the sample's classifier and save it as an MLflow model, deterministically.

    python -m samples.breast_cancer.train

Writes deployment-mlflow/model/ with mlflow.sklearn.save_model (a scikit-learn pipeline:
standard scaling, then logistic regression) and a column signature inferred from the
training rows, then prints the accuracy on the scoring rows, which it never trains on.
The committed model came from this script; the demo and the tests do not train.

The model is saved with cloudpickle rather than MLflow's default skops format: loading it
then takes about a third of the time (skops imports all of scikit-learn's types when it
loads), and a batchfn worker already runs the deployment owner's code.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from samples.breast_cancer.dataset import SAMPLE_DIR, load_split

MODEL_DIR = SAMPLE_DIR / "deployment-mlflow" / "model"


def train(model_dir: Path = MODEL_DIR) -> float:
    """Fit, save to `model_dir` (replacing it); returns accuracy on the scoring rows."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn import __version__ as sklearn_version
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    split = load_split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(split.train_features, split.train_labels)
    shutil.rmtree(model_dir, ignore_errors=True)
    mlflow.sklearn.save_model(
        model, str(model_dir),
        signature=infer_signature(split.train_features, model.predict(split.train_features)),
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        pip_requirements=[f"scikit-learn=={sklearn_version}", "cloudpickle"])
    return float((model.predict(split.score_features) == split.score_labels).mean())


def main() -> None:
    started = time.perf_counter()
    accuracy = train()
    print(f"saved {MODEL_DIR} in {time.perf_counter() - started:.1f}s; "
          f"accuracy on the scoring rows: {accuracy:.3f}")


if __name__ == "__main__":
    main()
