"""CLI start time: `batchfn job show` beside a bare interpreter (goal: ≤ 0.2 s).

    .venv/bin/python bench/cli_start.py [--repeats 20]

Starts Azurite and devhost, starts one small job, then runs, interleaved and --repeats
times each, as fresh processes: a bare interpreter (`python -c pass`), `batchfn --help`,
`batchfn job show -n <job>` (a real request to the devhost) and the same with
`--query status -o tsv` (the loop Azure ML's docs run with `az ml job show`). Reports the
medians and their ratio to the bare interpreter, measured in one run; the absolute figure
depends on how busy the machine is, so the results file records the load average.
Writes bench/results/cli_start.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    TUTORIAL_COMPUTE,
    data_container,
    median,
    percentile,
    running_stack,
    upload_blobs,
)
from bench.report import now_utc, write_results  # noqa: E402
from samples.mnist.naive_score import TORCH_DEPLOYMENT  # noqa: E402

ENDPOINT = "bench-cli-start"
GOAL_SECONDS = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="runs of each command")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started_at = now_utc()
    with running_stack("cli-start") as stack:
        client = stack.client
        client.create_endpoint(document={"name": ENDPOINT})
        client.create_compute(document=TUTORIAL_COMPUTE)  # the deployment's batch-cluster
        client.create_deployment(TORCH_DEPLOYMENT / "deployment.yml", endpoint_name=ENDPOINT,
                                 set_default=True)
        upload_blobs(data_container(stack.blob_service()), [("bench/cli-start/a.txt", b"a")])
        job = client.invoke(ENDPOINT, "azureml://datastores/workspaceblobstore/paths/"
                                      "bench/cli-start")["name"]
        env = {**os.environ, "BATCHFN_URL": stack.host.url, "BATCHFN_KEY": stack.host.key}
        commands = {
            "bare_interpreter": [sys.executable, "-c", "pass"],
            "batchfn_help": [*_batchfn(), "--help"],
            "job_show": [*_batchfn(), "job", "show", "-n", job],
            "job_show_query_tsv": [*_batchfn(), "job", "show", "-n", job,
                                   "--query", "status", "-o", "tsv"],
        }
        timings: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                timings[name].append(_run(command, env))
    load = [round(value, 2) for value in os.getloadavg()]
    bare = median(timings["bare_interpreter"])
    figures = {name: {"median_s": round(median(values), 4),
                      "p90_s": round(percentile(values, 0.9), 4),
                      "ratio_to_bare": round(median(values) / bare, 2)}
               for name, values in timings.items()}
    figures["load_average_after_1m_5m_15m"] = load
    shown = figures["job_show"]["median_s"]
    claims = {"job_show_start": {"measured": shown, "goal": f"<= {GOAL_SECONDS} s",
                                 "met": shown <= GOAL_SECONDS,
                                 "ratio_to_bare": figures["job_show"]["ratio_to_bare"]}}
    path = write_results("cli_start", figures, {
        "repeats": args.repeats, "runner": " ".join(_batchfn()),
        "job_show": "a real GET of one job from a local devhost",
    }, started_at, claims)
    for name in commands:
        print(f"{name:<20} median {figures[name]['median_s']:.3f}s  "
              f"p90 {figures[name]['p90_s']:.3f}s  ×{figures[name]['ratio_to_bare']} bare")
    print(f"batchfn job show: {shown:.3f}s (goal ≤ {GOAL_SECONDS} s) "
          f"{'met' if claims['job_show_start']['met'] else 'NOT met'}; load average {load}")
    print(f"results: {path}")
    return 0 if claims["job_show_start"]["met"] else 1


def _batchfn() -> list[str]:
    # The installed console script, as users run it; `python -m batchfn` otherwise.
    script = Path(sys.executable).with_name("batchfn")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "batchfn"]


def _run(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, timeout=60)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {completed.returncode}: "
                           f"{completed.stderr.decode(errors='replace')[-500:]}")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
