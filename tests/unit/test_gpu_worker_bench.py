"""bench/gpu_worker.py's tiny CPU configuration runs and writes a sane results file.

The figures are not checked against goals (this is a 2-core CPU); the GPU run is the one
documented in docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_tiny_configuration_scores_through_the_worker_pool(tmp_path):
    results = tmp_path / "gpu_worker.json"
    run = subprocess.run([sys.executable, "bench/gpu_worker.py", "--tiny", "--results",
                          str(results)], cwd=REPO, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "worker / slowest stage:" in run.stdout and "device: CPU" in run.stdout
    document = json.loads(results.read_text())
    figures = document["figures"]
    stages = figures["stages_alone_images_per_second"]
    assert document["benchmark"] == "gpu_worker" and document["settings"]["tiny"] is True
    assert figures["device"]["type"] == "cpu" and figures["images"] == 16
    assert figures["worker_pool"]["mini_batches"] == 2 and figures["worker_pool"]["workers"] == 1
    assert stages["decode_resize_gpu_decoder"] is None
    assert 0 < stages["slowest_stage"] == min(stages["model_on_device_tensors"],
                                              stages["decode_resize_cpu_cores"])
    assert figures["efficiency_vs_slowest_stage"] > 0 and figures["speedup_vs_naive"] > 0
    assert document["claims"]["efficiency_vs_slowest_stage"]["met"] is False  # not a GPU
    assert document["machine"]["load_average_1m_5m_15m"]
