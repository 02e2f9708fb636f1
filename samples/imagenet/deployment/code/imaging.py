"""Turning JPEG files into a batch of model inputs: on CPU threads or the GPU's JPEG decoder.

Both paths resize the shorter side to `resize` and crop the centre `size` x `size`, as
ImageNet evaluation does, and hand the model uint8 pixels that are normalised on the
device (four times less to copy than float32).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def decode_threads() -> int:
    """Decoder threads for this worker: the math threads the platform gave it, else all cores.

    PIL releases the interpreter lock while it decodes and resizes, so threads scale with
    the cores.
    """
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_file(path: str, resize: int, size: int) -> np.ndarray:
    """One JPEG as a size x size x 3 uint8 array (shorter side resized, centre cropped).

    `draft` lets libjpeg decode at a reduced scale when the image is much larger than
    needed, which cuts decode time several-fold for large photos.
    """
    with Image.open(path) as image:
        image.draft("RGB", (resize, resize))
        image = image.convert("RGB")
        width, height = image.size
        scale = resize / min(width, height)
        image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                             Image.BILINEAR)
        left = (image.width - size) // 2
        top = (image.height - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


class CpuDecoder:
    """Decodes a list of files on a thread pool into one pinned uint8 NHWC tensor."""

    def __init__(self, resize: int, size: int, threads: int | None = None,
                 pin: bool = False) -> None:
        self.resize = resize
        self.size = size
        self.pin = pin
        self._pool = ThreadPoolExecutor(threads or decode_threads(),
                                        thread_name_prefix="jpeg-decode")

    def decode(self, paths: Sequence[str]) -> torch.Tensor:
        batch = torch.empty((len(paths), self.size, self.size, 3), dtype=torch.uint8,
                            pin_memory=self.pin)
        target = batch.numpy()

        def fill(item: tuple[int, str]) -> None:
            index, path = item
            try:
                target[index] = decode_file(path, self.resize, self.size)
            except (OSError, ValueError) as error:
                raise ValueError(f"cannot decode {os.path.basename(path)}: {error}") from error

        for _ in self._pool.map(fill, enumerate(paths)):
            pass
        return batch


def gpu_decoder_available(device: torch.device) -> bool:
    """True when torchvision can decode JPEGs on `device` (a CUDA GPU)."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg

        probe = _tiny_jpeg()
        decode_jpeg([probe], device=device)
    except Exception:  # noqa: BLE001 - no torchvision, or built without nvJPEG
        return False
    return True


class GpuDecoder:
    """Reads files on threads and decodes them on the GPU (nvJPEG), resized on the GPU.

    Decoding runs on a CUDA stream of its own, so the next chunk's decode overlaps the
    model's work on the current one (queued earlier on the default stream); the default
    stream waits for the decode only where the model needs its pixels.
    """

    def __init__(self, resize: int, size: int, device: torch.device,
                 threads: int | None = None) -> None:
        self.resize = resize
        self.size = size
        self.device = device
        self._pool = ThreadPoolExecutor(threads or decode_threads(),
                                        thread_name_prefix="jpeg-read")
        self._fallback = CpuDecoder(resize, size, threads, pin=True)
        self._stream = torch.cuda.Stream(device)

    def decode(self, paths: Sequence[str]) -> torch.Tensor:
        """A uint8 NHWC tensor on the GPU, ready for the default stream."""
        from torchvision.io import ImageReadMode, decode_jpeg

        data = list(self._pool.map(_read_bytes, paths))
        with torch.cuda.stream(self._stream):
            try:
                images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:
                images = None
            if images is not None:
                batch = torch.empty((len(paths), 3, self.size, self.size), dtype=torch.uint8,
                                    device=self.device)
                for index, image in enumerate(images):
                    batch[index] = _resize_crop(image, self.resize, self.size)
        if images is None:
            # Not a JPEG the GPU decodes (or a corrupt one): the CPU path names the file.
            return self._fallback.decode(paths).to(self.device)
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_stream(self._stream)
        batch.record_stream(consumer)  # made on the decode stream, used on the default one
        return batch.permute(0, 2, 3, 1)


def to_model_input(batch: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NHWC pixels (pinned CPU memory or on the device) → normalised NCHW on `device`.

    The copy is non-blocking from pinned memory, and channels-last memory lets the
    convolutions skip a layout change.
    """
    pixels = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN, device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device, dtype=dtype).view(1, 3, 1, 1) * 255
    normalised = (pixels.to(dtype) - mean) / std
    return normalised.contiguous(memory_format=torch.channels_last)


def _read_bytes(path: str) -> torch.Tensor:
    with open(path, "rb") as file:
        return torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)


def _resize_crop(image: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    _, height, width = image.shape
    scale = resize / min(width, height)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    resized = torch.nn.functional.interpolate(
        image.unsqueeze(0).float(), size=(new_height, new_width), mode="bilinear",
        antialias=True, align_corners=False).squeeze(0)
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    return resized[:, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)


def _tiny_jpeg() -> torch.Tensor:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buffer, format="JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
