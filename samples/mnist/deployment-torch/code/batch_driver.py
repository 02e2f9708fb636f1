"""Azure ML batch scoring script for the torch MNIST classifier.

Follows Azure ML's mnist-classifier tutorial script, with one change that matters for
throughput: each mini-batch is decoded into one tensor and scored in one forward pass
(the tutorial runs one pass per image). Runs on a GPU when there is one: the model and
the batch live on the same device, and results come back to the CPU before numpy.
"""

import os
from os.path import basename

import numpy as np
import pandas as pd
import torch
from mnist_classifier import MnistClassifier
from PIL import Image

IMAGE_SIZE = (28, 28)


def init():
    """Load the model once per worker: $AZUREML_MODEL_DIR/model/mnist_classifier.pt."""
    global model
    global device

    # AZUREML_MODEL_DIR contains the registered model folder, named "model" here.
    model_file = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "mnist_classifier.pt")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model = MnistClassifier()
    model.load_state_dict(torch.load(model_file, map_location=device, weights_only=True))
    model.to(device)
    model.eval()


def run(mini_batch: list[str]) -> pd.DataFrame:
    """Score the mini-batch's image files: one row (file, class, probability) per file."""
    print(f"Executing run method over batch of {len(mini_batch)} files.")
    if not mini_batch:
        return pd.DataFrame({"file": [], "class": [], "probability": []})

    pixels = np.stack([read_image(image_path) for image_path in mini_batch])
    batch = torch.from_numpy(pixels).unsqueeze(1).to(device=device, dtype=torch.float32)

    with torch.inference_mode():
        predict_logits = model(batch)
        predictions = torch.softmax(predict_logits, dim=-1)
        predicted_prob, predicted_class = torch.max(predictions, dim=-1)

    return pd.DataFrame(
        {
            "file": [basename(image_path) for image_path in mini_batch],
            "class": predicted_class.cpu().numpy(),
            "probability": predicted_prob.cpu().numpy(),
        }
    )


def read_image(image_path: str) -> np.ndarray:
    """A 28x28 uint8 greyscale array; a clear error naming the file if it is not one."""
    try:
        with Image.open(image_path) as image:
            image = image.convert("L")
            if image.size != IMAGE_SIZE:
                raise ValueError(f"expected a 28x28 image, got {image.size[0]}x{image.size[1]}")
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot score {basename(image_path)}: {error}") from error
