"""A large job: invoke returns < 1 s, no process above 1 GB RSS, finalize < 30 s.

    .venv/bin/python bench/large_invoke.py [--files 20000] [--mini-batch-size 100]
    .venv/bin/python bench/large_invoke.py --files 100000     # the full size (~15-20 min here)

Uploads --files tiny blobs (8 bytes each, 16 threads) to the default datastore, registers
an echo deployment (tests/scoring_scripts/echo.py: one row per file, no model work, so the
platform is what is measured), invokes the folder and times the invoke call, samples the
RSS of devhost and all its child processes (scoring workers included) every 0.2 s until
the job ends, and takes the finalize time from the job's own timestamps: last mini-batch
recorded → job ended (an upper bound: it includes the orchestrator noticing the last
mini-batch). Azurite's own RSS is reported beside, but it is the emulator, not batchfn.

Cost on the shared 2-core machine: uploading runs at ~200-800 blobs/s and the job at
~150-400 files/s, so 100,000 files take 15-20 minutes in all; the default of 20,000 keeps
a run near 4 minutes. Writes bench/results/large_invoke.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    REPO,
    RssSampler,
    data_container,
    run_job,
    running_stack,
    upload_blobs,
)
from bench.report import now_utc, write_results  # noqa: E402

ENDPOINT = "bench-large"
INPUT_PREFIX = "bench/large"
SCRIPTS = REPO / "tests" / "scoring_scripts"
BLOB_BODY = b"01234567"
GIB = 2**30
GOALS = {"invoke_seconds": 1.0, "max_process_rss_gib": 1.0, "finalize_seconds": 30.0}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started_at = now_utc()
    with running_stack("large") as stack, tempfile.TemporaryDirectory() as model_root:
        client = stack.client
        model = Path(model_root) / "model"
        model.mkdir()
        (model / "weights.txt").write_text("echo has no weights\n")
        client.create_endpoint(document={"name": ENDPOINT})
        client.create_deployment(document={
            "name": "echo", "endpoint_name": ENDPOINT, "model": {"path": str(model)},
            "code_configuration": {"code": str(SCRIPTS), "scoring_script": "echo.py"},
        }, set_default=True)
        container = data_container(stack.blob_service(16))
        names = [f"{INPUT_PREFIX}/{index:07d}.bin" for index in range(args.files)]
        upload_s = upload_blobs(container, ((name, BLOB_BODY) for name in names))
        say(f"uploaded {args.files} blobs in {upload_s:.0f}s ({args.files / upload_s:.0f}/s)")

        azurite_pid = stack.azurite.process.pid
        with RssSampler(stack.host.pid, {"azurite (storage emulator)": azurite_pid}) as rss:
            run = run_job(client, ENDPOINT, f"azureml://datastores/workspaceblobstore/paths/"
                          f"{INPUT_PREFIX}", args.files,
                          settings={"mini_batch_size": args.mini_batch_size},
                          poll=0.25, timeout=args.job_timeout)
        say(f"job {run.name}: {run.total_seconds:.0f}s ({run.files_per_second:.0f} files/s)")

    batchfn_peaks = {label: rss_bytes for label, rss_bytes in rss.peak_by_process.items()
                     if not label.startswith("azurite")}
    max_rss = max(batchfn_peaks.values())
    finalize_s = run.record_seconds("last_completed_at", "ended_at")
    figures = {
        "upload_seconds": round(upload_s, 1),
        "invoke_seconds": round(run.invoke_seconds, 3),
        "job_seconds": round(run.total_seconds, 1),
        "files_per_second": round(run.files_per_second, 1),
        "finalize_seconds_record": finalize_s,
        "finalize_seconds_observed": (round(run.total_seconds - run.finalizing_seen_at, 2)
                                      if run.finalizing_seen_at is not None else None),
        "created_to_planned_s": run.record_seconds("created_at", "planned_at"),
        "planned_to_last_batch_s": run.record_seconds("planned_at", "last_completed_at"),
        "max_process_rss_mib": round(max_rss / 2**20, 1),
        "peak_tree_total_rss_mib": round(rss.peak_tree_total / 2**20, 1),
        "peak_rss_mib_by_process": {label: round(value / 2**20, 1)
                                    for label, value in sorted(rss.peak_by_process.items())},
        "rss_samples": rss.samples,
    }
    claims = {
        "invoke_seconds": _claim(run.invoke_seconds, "invoke_seconds", "s"),
        "max_process_rss_gib": _claim(max_rss / GIB, "max_process_rss_gib", "GiB"),
        "finalize_seconds": _claim(finalize_s, "finalize_seconds", "s"),
    }
    path = write_results("large_invoke", figures, {
        "files": args.files, "mini_batch_size": args.mini_batch_size,
        "blob_bytes": len(BLOB_BODY), "scoring_script": "tests/scoring_scripts/echo.py",
        "rss_sample_interval_s": 0.2,
    }, started_at, claims)
    for name, claim in claims.items():
        print(f"{name}: {claim['measured']} (goal {claim['goal']}) "
              f"{'met' if claim['met'] else 'NOT met'}")
    print(f"peak RSS by process (MiB): {figures['peak_rss_mib_by_process']}")
    print(f"results: {path}")
    return 0 if all(claim["met"] for claim in claims.values()) else 1


def _claim(value: float | None, goal_name: str, unit: str) -> dict:
    goal = GOALS[goal_name]
    return {"measured": None if value is None else round(value, 3), "goal": f"< {goal} {unit}",
            "met": value is not None and value < goal}


def say(text: str) -> None:
    print(f"[large_invoke] {text}", flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000,
                        help="tiny blobs in the job (the goal is stated for 100,000)")
    parser.add_argument("--mini-batch-size", type=int, default=100)
    parser.add_argument("--job-timeout", type=float, default=1800.0,
                        help="seconds to wait for the job to end")
    args = parser.parse_args(argv)
    if args.files < 1 or args.mini_batch_size < 1:
        parser.error("--files and --mini-batch-size must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main())
