"""Which GPUs this host has, found without importing a deep learning framework."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping


def detect_gpus(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """GPU ids to hand out as CUDA_VISIBLE_DEVICES, one per worker slot (empty: none).

    An explicit CUDA_VISIBLE_DEVICES wins (CUDA stops at the first "-1"); otherwise the GPUs
    `nvidia-smi -L` lists. Importing torch here would be slow and would initialise CUDA in
    the host, which forked children could not use.
    """
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids: list[str] = []
        for item in (part.strip() for part in visible.split(",")):
            if not item or item.startswith("-"):
                break
            ids.append(item)
        return tuple(ids)
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return ()
    try:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    count = sum(1 for line in listing.splitlines() if line.startswith("GPU "))
    return tuple(str(i) for i in range(count))


def gpu_types(ids: tuple[str, ...]) -> dict[str, str]:
    """The device type (e.g. "NVIDIA H100 80GB HBM3") of each GPU id in `ids`, as
    `nvidia-smi` names it by index; "GPU" where it cannot tell (no nvidia-smi, a UUID id).
    Usage reports count GPU-seconds by these names."""
    names: dict[str, str] = {}
    nvidia_smi = shutil.which("nvidia-smi") if ids else None
    if nvidia_smi is not None:
        try:
            listing = subprocess.run(
                [nvidia_smi, "--query-gpu=index,name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            index, _, name = line.partition(",")
            if name.strip():
                names[index.strip()] = name.strip()[:100]
    return {gpu: names.get(gpu, "GPU") for gpu in ids}
