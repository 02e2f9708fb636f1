"""Azure ML batch scoring script: a ResNet-50 classifier over JPEG photos, built for a GPU.

What keeps the GPU busy (the reason to pay for one):
- the whole mini-batch is scored in a few large forward passes, not one pass per image;
- JPEGs are decoded on a thread pool (PIL releases the interpreter lock), or by the GPU's
  JPEG decoder when torchvision has one for this GPU, and resized on the way;
- decoded pixels stay uint8 in pinned memory and are copied without blocking, then
  normalised on the device: a quarter of the bytes of float32;
- on CUDA, autocast runs the network in bfloat16 (float16 where bfloat16 is missing) with
  channels-last memory;
- the mini-batch is split in chunks: while the GPU runs one chunk (kernels run
  asynchronously), the CPU already decodes the next.
It runs on a CPU too (float32, no chunks). Set BATCH_DECODER=cpu|gpu|auto (default auto)
in the deployment's environment_variables to choose the decoder.
"""

import json
import os

import pandas as pd
import torch
from imaging import CpuDecoder, GpuDecoder, gpu_decoder_available, to_model_input
from resnet import build_model

CUDA_CHUNK = 128  # images per forward pass on a GPU


def init():
    """Build the model once per worker from $AZUREML_MODEL_DIR/model/config.json."""
    global model, device, dtype, decoder, chunk, config

    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "config.json")) as file:
        config = json.load(file)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, definition = build_model(config["num_classes"], config["seed"])
    model = model.to(device, memory_format=torch.channels_last).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        chunk = CUDA_CHUNK
    else:
        dtype = torch.float32
        chunk = None
    decoder = _decoder(os.environ.get("BATCH_DECODER", "auto"))
    print(f"ResNet-50 ({definition}) on {device}, {dtype}, decoder {type(decoder).__name__}")
    # The first passes pick convolution algorithms: do it here, not in the first run().
    warm = torch.zeros((chunk or 1, config["image_size"], config["image_size"], 3),
                       dtype=torch.uint8)
    _forward(warm)


def run(mini_batch):
    """One row per image: file, predicted class, its probability."""
    if not mini_batch:
        return pd.DataFrame({"file": [], "class": [], "probability": []})
    step = chunk or len(mini_batch)
    logits = [_forward(decoder.decode(mini_batch[start:start + step]))
              for start in range(0, len(mini_batch), step)]
    probability, label = torch.cat(logits).float().softmax(dim=-1).max(dim=-1)
    return pd.DataFrame({
        "file": [os.path.basename(path) for path in mini_batch],
        "class": label.cpu().numpy(),
        "probability": probability.cpu().numpy(),
    })


def _forward(pixels):
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                enabled=device.type == "cuda"):
        return model(to_model_input(pixels, device, dtype))


def _decoder(choice):
    size, resize = config["image_size"], config["resize"]
    if choice not in ("auto", "cpu", "gpu"):
        raise ValueError(f"BATCH_DECODER must be auto, cpu or gpu, not {choice!r}")
    if choice != "cpu" and gpu_decoder_available(device):
        return GpuDecoder(resize, size, device)
    if choice == "gpu":
        raise RuntimeError("BATCH_DECODER=gpu, but torchvision has no JPEG decoder for this "
                           f"device ({device})")
    return CpuDecoder(resize, size, pin=device.type == "cuda")
