"""Warm latency of a 1-file job, invoke → Completed (goal: median ≤ 0.5 s on a quiet machine).

    .venv/bin/python bench/latency.py [--repeats 10]

Registers the MNIST torch deployment (its environment honoured) and the same deployment
without its environment (the image's packages), uploads one PNG, runs one warm-up job of
each (it builds the environment and starts the scoring worker: torch import and init()),
then times --repeats jobs of each, alternating, on the warm host from the client (invoke →
the first poll that sees Completed; polls every 25 ms) and from the job record
(created_at → ended_at). The claim is the published deployment's; the ratio of the two
medians says what its environment costs a warm job start. Unlike the ratios of the other
benchmarks this claim is absolute by nature, so it depends on how busy the machine is: the
results file records the load average. Writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    TUTORIAL_COMPUTE,
    data_container,
    median,
    percentile,
    run_job,
    running_stack,
    upload_blobs,
)
from bench.report import now_utc, write_results  # noqa: E402
from samples.mnist.dataset import DATA_DIR  # noqa: E402
from samples.mnist.naive_score import TORCH_DEPLOYMENT  # noqa: E402
from samples.mnist.prepare_data import prepare  # noqa: E402
from shared.contract.deployment_spec import load_document  # noqa: E402

ENDPOINT = "bench-latency"
IMAGE_DEPLOYMENT = "mnist-torch-image"
INPUT_PREFIX = "bench/one-digit"
POLL_SECONDS = 0.025
GOAL_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed jobs after the warm-up")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    started_at = now_utc()
    png = _one_png()
    with running_stack("latency") as stack:
        client = stack.client
        client.create_endpoint(document={"name": ENDPOINT})
        client.create_compute(document=TUTORIAL_COMPUTE)  # the deployment's batch-cluster
        client.create_deployment(TORCH_DEPLOYMENT / "deployment.yml", endpoint_name=ENDPOINT,
                                 set_default=True)
        # The same deployment without its environment (the image's packages): its jobs
        # alternate with the published one's, so that both see the same load.
        document = load_document(TORCH_DEPLOYMENT / "deployment.yml")
        document.pop("environment")
        client.create_deployment(document=document, base_dir=TORCH_DEPLOYMENT,
                                 endpoint_name=ENDPOINT, name=IMAGE_DEPLOYMENT)
        upload_blobs(data_container(stack.blob_service()),
                     [(f"{INPUT_PREFIX}/{png.name}", png.read_bytes())])
        uri = f"azureml://datastores/workspaceblobstore/paths/{INPUT_PREFIX}"
        warmup = run_job(client, ENDPOINT, uri, 1, poll=POLL_SECONDS)
        say(f"warm-up (cold worker, its environment built) job: {warmup.total_seconds:.2f}s")
        run_job(client, ENDPOINT, uri, 1, deployment=IMAGE_DEPLOYMENT, poll=POLL_SECONDS)
        runs, image_runs = [], []
        for number in range(args.repeats):
            run = run_job(client, ENDPOINT, uri, 1, poll=POLL_SECONDS)
            runs.append(run)
            image_runs.append(run_job(client, ENDPOINT, uri, 1, deployment=IMAGE_DEPLOYMENT,
                                      poll=POLL_SECONDS))
            say(f"job {number + 1}/{args.repeats}: {run.total_seconds:.3f}s "
                f"(without its environment: {image_runs[-1].total_seconds:.3f}s)")

    client_seconds = [run.total_seconds for run in runs]
    image_seconds = [run.total_seconds for run in image_runs]
    record_seconds = [run.record_seconds("created_at", "ended_at") for run in runs]
    figures = {
        "cold_first_job_seconds": round(warmup.total_seconds, 3),
        "client_seconds": {"median": round(median(client_seconds), 3),
                           "p90": round(percentile(client_seconds, 0.9), 3),
                           "min": round(min(client_seconds), 3),
                           "max": round(max(client_seconds), 3),
                           "all": [round(value, 3) for value in client_seconds]},
        "record_created_to_ended_seconds": {
            "median": round(median(record_seconds), 3),
            "p90": round(percentile(record_seconds, 0.9), 3)},
        "invoke_seconds_median": round(median([run.invoke_seconds for run in runs]), 3),
        "without_environment_client_seconds": {
            "median": round(median(image_seconds), 3),
            "p90": round(percentile(image_seconds, 0.9), 3)},
        "environment_over_image_median": round(median(client_seconds)
                                               / median(image_seconds), 2),
        "runs": [{"client_s": round(run.total_seconds, 3),
                  "created_to_planned_s": run.record_seconds("created_at", "planned_at"),
                  "planned_to_scored_s": run.record_seconds("planned_at", "last_completed_at"),
                  "scored_to_ended_s": run.record_seconds("last_completed_at", "ended_at")}
                 for run in runs],
        "stages_median_s": {
            "created_to_planned": _median_stage(runs, "created_at", "planned_at"),
            "planned_to_scored": _median_stage(runs, "planned_at", "last_completed_at"),
            "scored_to_ended": _median_stage(runs, "last_completed_at", "ended_at"),
        },
    }
    p50 = figures["client_seconds"]["median"]
    claims = {"warm_latency_median": {"measured": p50, "goal": f"<= {GOAL_SECONDS} s",
                                      "met": p50 <= GOAL_SECONDS,
                                      "p90": figures["client_seconds"]["p90"]}}
    path = write_results("latency", figures, {
        "repeats": args.repeats, "poll_seconds": POLL_SECONDS,
        "deployment": "samples/mnist/deployment-torch", "input": "one MNIST PNG",
    }, started_at, claims)
    print(f"warm 1-file job, invoke → Completed: median {p50:.3f}s, "
          f"p90 {figures['client_seconds']['p90']:.3f}s (goal ≤ {GOAL_SECONDS} s) "
          f"{'met' if claims['warm_latency_median']['met'] else 'NOT met'}")
    print(f"stages (median): {figures['stages_median_s']}")
    print(f"the same deployment without its environment: median "
          f"{figures['without_environment_client_seconds']['median']:.3f}s "
          f"(with / without: {figures['environment_over_image_median']})")
    print(f"results: {path}")
    return 0 if claims["warm_latency_median"]["met"] else 1


def _median_stage(runs, start: str, end: str) -> float | None:
    values = [run.record_seconds(start, end) for run in runs]
    values = [value for value in values if value is not None]
    return round(median(values), 3) if values else None


def _one_png() -> Path:
    pngs = sorted((DATA_DIR / "sample").glob("*.png"))
    if not pngs:
        say("writing the MNIST sample PNGs (samples/mnist/prepare_data.py)")
        pngs = sorted(prepare(DATA_DIR, include_full=False)["sample"].glob("*.png"))
    return pngs[0]


def say(text: str) -> None:
    print(f"[latency] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
