"""Where the scoring host's own CPU goes while it scores: py-spy on devhost during one job.

    .venv/bin/pip install py-spy      # not part of `make install`
    .venv/bin/python bench/host_profile.py [--files 2000] [--mini-batch-size 10]

Starts Azurite and devhost (role `all`), runs a warm-up job on the MNIST torch deployment,
then samples the devhost process with py-spy (`--gil`: only the thread holding the
interpreter lock, i.e. the host's CPU time as Python sees it) while a job of --files PNGs
runs, and sorts the samples by what the host was doing (the first matching category of each
stack, in the order of CATEGORIES). Prints the shares and writes
bench/results/host_profile.json with them and the raw sample counts.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    TUTORIAL_COMPUTE,
    data_container,
    run_job,
    running_stack,
    upload_blobs,
)
from bench.report import now_utc, write_results  # noqa: E402
from samples.mnist.dataset import DATA_DIR  # noqa: E402
from samples.mnist.naive_score import TORCH_DEPLOYMENT  # noqa: E402
from samples.mnist.prepare_data import prepare  # noqa: E402

ENDPOINT = "bench-profile"
WARMUP_FILES = 100
SAMPLE_RATE = 100
# (what the host was doing, substrings of a stack's frames that say so), first match wins.
CATEGORIES = (
    ("orchestrations: replays, activities, task hub I/O",
     ("devhost/durable", "orchestration.py", "finalize.py", "monitor.py", "planner.py",
      "recovery.py", "progress.py")),
    ("HTTP API: the client's job polls", ("devhost/http.py", "aiohttp/web", "jobs_api.py")),
    ("queue listener: receive, delete (async queue SDK)",
     ("devhost/queues.py", "storage/queue/")),
    ("ledger appends (sync blob SDK, in threads)", ("ledger_commits", "append_lines")),
    ("heartbeats (sync blob SDK, in a thread)", ("heartbeats.py", "heartbeat_blobs")),
    ("job record and manifest reads", ("job_store.py",)),
    ("read URL signing", ("grants.py",)),
    ("worker pipe and pool", ("pool.py", "isolation.py")),
    ("the handler's own code", ("minibatch_handler", "scoring_runtime", "scoring_queue",
                                "attempt_logs")),
    ("thread hops: futures handed between threads and the loop",
     ("_chain_future", "_copy_future_state", "run_in_executor", "to_thread")),
    ("the event loop itself: scheduling, sockets (aiohttp)", ("asyncio/",)),
)


def categorize(raw: str) -> Counter:
    """Samples per category from py-spy's raw output (one `stack count` line each)."""
    counts: Counter = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        label = next((name for name, needles in CATEGORIES
                      if any(needle in stack for needle in needles)), "other")
        counts[label] += int(number)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mini-batch-size", type=int, default=10)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    started_at = now_utc()
    pngs = sorted((DATA_DIR / "full").glob("*.png"))[:args.files]
    if len(pngs) < args.files:
        prepare(DATA_DIR)
        pngs = sorted((DATA_DIR / "full").glob("*.png"))[:args.files]
    settings = {"mini_batch_size": args.mini_batch_size}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder, \
            running_stack("profile") as stack:
        client = stack.client
        client.create_endpoint(document={"name": ENDPOINT})
        client.create_compute(document=TUTORIAL_COMPUTE)  # the deployment's batch-cluster
        client.create_deployment(TORCH_DEPLOYMENT / "deployment.yml", endpoint_name=ENDPOINT,
                                 set_default=True)
        container = data_container(stack.blob_service())
        upload_blobs(container, ((f"profile/{p.name}", p.read_bytes()) for p in pngs))
        upload_blobs(container, ((f"profile-warmup/{p.name}", p.read_bytes())
                                 for p in pngs[:WARMUP_FILES]))
        uri = "azureml://datastores/workspaceblobstore/paths/"
        run_job(client, ENDPOINT, uri + "profile-warmup", min(WARMUP_FILES, len(pngs)),
                settings=settings, poll=0.25)
        output = Path(folder) / "profile.txt"
        sampler = subprocess.Popen([spy, "record", "--pid", str(stack.host.pid), "--gil",
                                    "--rate", str(SAMPLE_RATE), "--format", "raw",
                                    "--output", str(output)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        run = run_job(client, ENDPOINT, uri + "profile", len(pngs), settings=settings,
                      poll=0.25)
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)
        counts = categorize(output.read_text())
    total = sum(counts.values())
    shares = {label: round(count / total, 3) for label, count in counts.most_common()}
    say(f"job: {run.total_seconds:.1f}s, {run.files_per_second:.0f} files/s; the host held "
        f"the interpreter lock for {total / SAMPLE_RATE:.1f}s of it")
    for label, share in shares.items():
        say(f"  {share:6.1%}  {label}")
    path = write_results("host_profile", {
        "job_seconds": round(run.total_seconds, 2),
        "files_per_second": round(run.files_per_second, 1),
        "gil_seconds": round(total / SAMPLE_RATE, 2), "samples": total,
        "shares": shares}, {"files": len(pngs), **settings, "sample_rate": SAMPLE_RATE,
                            "deployment": "samples/mnist/deployment-torch"}, started_at)
    print(f"results: {path}")
    return 0


def say(text: str) -> None:
    print(f"[profile] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
