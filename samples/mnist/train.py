"""Train the sample's two models on the 9,000 training digits, deterministically.

    python -m samples.mnist.train [--framework torch|keras|both]

Writes deployment-torch/model/mnist_classifier.pt (a state_dict of
code/mnist_classifier.MnistClassifier) and deployment-keras/model/mnist_classifier.keras,
then prints each model's accuracy on the 1,000-digit scoring sample, which it never trains
on. The committed models came from this script; `make demo` and the tests do not train.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from samples.mnist.dataset import Digits, load_digits, scoring_sample, training_set

SAMPLE_DIR = Path(__file__).resolve().parent
TORCH_DEPLOYMENT = SAMPLE_DIR / "deployment-torch"
KERAS_DEPLOYMENT = SAMPLE_DIR / "deployment-keras"
TORCH_MODEL_FILE = TORCH_DEPLOYMENT / "model" / "mnist_classifier.pt"
KERAS_MODEL_FILE = KERAS_DEPLOYMENT / "model" / "mnist_classifier.keras"

SEED = 7
EPOCHS = 8
BATCH_SIZE = 64
LEARNING_RATE = 2e-3


def train_torch(train: Digits, evaluate: Digits, model_file: Path = TORCH_MODEL_FILE) -> float:
    """Train MnistClassifier, save its state_dict; returns accuracy on `evaluate`."""
    import torch

    sys.path.insert(0, str(TORCH_DEPLOYMENT / "code"))
    from mnist_classifier import MnistClassifier

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(SEED)
    model = MnistClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    pixels = torch.from_numpy(train.images).unsqueeze(1).float()
    labels = torch.from_numpy(train.labels)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(labels), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss_fn(model(pixels[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    model_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_file)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(evaluate.images).unsqueeze(1).float()).argmax(-1)
    return float((predicted.numpy() == evaluate.labels).mean())


def train_keras(train: Digits, evaluate: Digits, model_file: Path = KERAS_MODEL_FILE) -> float:
    """Train the same CNN in Keras (logits out), save it as .keras; returns accuracy."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            keras.layers.Rescaling(1.0 / 255),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(10),
        ],
        name="mnist_classifier",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        train.images.astype("float32"),
        train.labels,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=True,
        verbose=0,
    )
    model_file.parent.mkdir(parents=True, exist_ok=True)
    model.save(model_file)
    logits = model.predict_on_batch(evaluate.images.astype("float32"))
    return float((np.argmax(logits, axis=-1) == evaluate.labels).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("torch", "keras", "both"), default="both")
    args = parser.parse_args(argv)
    digits = load_digits()
    train, evaluate = training_set(digits), scoring_sample(digits)
    trainers = {"torch": train_torch, "keras": train_keras}
    for framework, trainer in trainers.items():
        if args.framework in (framework, "both"):
            started = time.perf_counter()
            accuracy = trainer(train, evaluate)
            elapsed = time.perf_counter() - started
            print(f"{framework}: accuracy {accuracy:.4f} on the sample, trained in {elapsed:.1f}s")


if __name__ == "__main__":
    main()
