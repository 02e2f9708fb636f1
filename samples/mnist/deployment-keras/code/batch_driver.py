"""Azure ML batch scoring script for the Keras MNIST classifier.

Follows Azure ML's mnist-classifier tutorial script, with one change that matters for
throughput: each mini-batch is decoded into one array and scored in one call (the
tutorial calls `model.predict` once per image). TensorFlow places the work on a GPU when
there is one; predictions come back as numpy.
"""

import os
from os.path import basename

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from tensorflow.keras.models import load_model

IMAGE_SIZE = (28, 28)


def init():
    """Load the model once per worker: $AZUREML_MODEL_DIR/model/mnist_classifier.keras."""
    global model

    # AZUREML_MODEL_DIR contains the registered model folder, named "model" here.
    model_path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "mnist_classifier.keras")
    model = load_model(model_path)


def run(mini_batch: list[str]) -> pd.DataFrame:
    """Score the mini-batch's image files: one row (file, class, probability) per file."""
    print(f"Executing run method over batch of {len(mini_batch)} files.")
    if not mini_batch:
        return pd.DataFrame({"file": [], "class": [], "probability": []})

    data_batch = np.stack([read_image(image_path) for image_path in mini_batch])

    # predict_on_batch: one forward pass, without predict()'s per-call dataset set-up.
    pred = model.predict_on_batch(data_batch)
    predictions = tf.math.softmax(pred, axis=-1).numpy()

    return pd.DataFrame(
        {
            "file": [basename(image_path) for image_path in mini_batch],
            "class": np.argmax(predictions, axis=-1),
            "probability": np.max(predictions, axis=-1),
        }
    )


def read_image(image_path: str) -> np.ndarray:
    """A 28x28 float32 greyscale array (0..255); a clear error naming the file otherwise."""
    try:
        with Image.open(image_path) as image:
            image = image.convert("L")
            if image.size != IMAGE_SIZE:
                raise ValueError(f"expected a 28x28 image, got {image.size[0]}x{image.size[1]}")
            return np.asarray(image, dtype=np.float32)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot score {basename(image_path)}: {error}") from error
