"""Time to a ready environment for the MNIST Keras deployment (its conda file, tf-keras
added): cold (no environment built, uv's wheel cache warm), warm (built: a job start
finds it), unpacked from blob storage on a second host (once the first host's pack is
uploaded, which happens after the first host's environment is ready), beside plain pip
installing the same requirements into a fresh venv (also from a warm cache); and, to say
where the unpack's time goes, the download of the pack alone. One run, figures and ratios
in bench/results/environments.json (with the load average).

    .venv/bin/python -m bench.environments      # UV_CACHE_DIR=<folder> keeps the wheels
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from bench.report import now_utc, write_results
from devhost.azurite import Azurite
from shared.contract.deployment_spec import load_document
from shared.contract.environment_spec import EnvironmentSpec
from shared.contract.layout import ENVIRONMENTS_CONTAINER
from shared.contract.registry_records import EnvironmentRecord
from shared.scoring.environments import EnvironmentCache

REPO = Path(__file__).resolve().parent.parent
KERAS = REPO / "samples" / "mnist" / "deployment-keras"
GOALS = {"cold": 60, "unpack": 5, "warm": 0.5}  # seconds


def keras_environment() -> EnvironmentRecord:
    document = load_document(KERAS / "deployment.yml")["environment"]
    spec = EnvironmentSpec.from_document(document, base_dir=KERAS)
    spec = EnvironmentSpec(requirements=(*spec.requirements, "tf-keras"), python=spec.python,
                           name=spec.name)
    return EnvironmentRecord(name="bench-keras", version="1", digest=spec.digest, spec=spec)


def timed(action) -> tuple[float, object]:  # noqa: ANN001
    started = time.monotonic()
    result = action()
    return time.monotonic() - started, result


def plain_pip(record: EnvironmentRecord, folder: Path) -> float:
    """pip into a fresh venv over the image's packages (system site), as a host without
    batchfn's layering would install the same requirements."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    requirements = folder / "requirements.txt"
    requirements.write_text("\n".join(record.spec.requirements) + "\n")
    started = time.monotonic()
    subprocess.run([str(folder / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", "-r", str(requirements)], check=True)
    return time.monotonic() - started


def main() -> int:
    started_at = now_utc()
    load_at_start = os.getloadavg()
    record = keras_environment()
    work = Path(tempfile.mkdtemp(prefix="batchfn-bench-env-"))
    azurite = Azurite(location=work / "azurite").start()
    try:
        container = BlobServiceClient.from_connection_string(
            azurite.connection_string).get_container_client(ENVIRONMENTS_CONTAINER)
        # Warm uv's wheel cache first (the goal is "with wheels cached"): every host below
        # shares it, as a host's builds share its own.
        os.environ.setdefault("UV_CACHE_DIR", str(work / "uv-cache"))
        EnvironmentCache(work / "prime").get(record)
        first = EnvironmentCache(work / "host-1", container, host_id="host-1")
        cold, built = timed(lambda: first.get(record))
        packed, _ = timed(first.wait_packed)  # the first host already scores meanwhile
        warm, _ = timed(lambda: EnvironmentCache(work / "host-1").get(record))
        second = EnvironmentCache(work / "host-2", container, host_id="host-2")
        unpack, _ = timed(lambda: second.get(record))
        [pack] = list(container.list_blobs(name_starts_with="packs/"))
        download, _ = timed(lambda: sum(len(chunk) for chunk in container.download_blob(
            pack.name).chunks()))
        plain_pip(record, work / "pip-prime")  # pip's own cache warm too
        pip = plain_pip(record, work / "pip")
        size = sum(p.stat().st_size for p in built.folder.rglob("*") if p.is_file())
    finally:
        azurite.stop()
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "cold_seconds": round(cold, 2), "warm_seconds": round(warm, 3),
        "pack_seconds_after_cold": round(packed, 2),
        "unpack_seconds": round(unpack, 2), "pack_download_alone_seconds": round(download, 2),
        "plain_pip_seconds": round(pip, 2), "pip_over_cold": round(pip / cold, 1),
        "environment_mb": round(size / 2**20, 1), "pack_mb": round(pack.size / 2**20, 1),
        "pack": pack.name.rsplit("/", 1)[-1].split(".", 1)[1],
        "load_average_at_start": [round(value, 2) for value in load_at_start],
    }
    claims = {name: {"measured": figures[f"{name}_seconds"], "goal": f"<= {goal} s",
                     "met": figures[f"{name}_seconds"] <= goal}
              for name, goal in GOALS.items()}
    path = write_results("environments", figures, {
        "environment": list(record.spec.requirements), "python": record.spec.python,
        "uv_cache": "warm (primed by a first build)"}, started_at, claims)
    print(json.dumps(figures, indent=2))
    print(f"results: {path}")
    return 0 if all(claim["met"] for claim in claims.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
