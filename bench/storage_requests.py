"""Storage requests per file of a job, counted from Azurite's own request log.

    .venv/bin/python bench/storage_requests.py [--files 1000] [--sizes 10,100]

Azurite runs with its debug log on (one line per request it serves, among others), the
MNIST torch deployment scores --files PNGs once per mini_batch_size after a warm-up job,
and every request Azurite served from the invoke to the job's end is counted by what it
was for: the input GETs, the mini-batch messages (sent, received, deleted or updated),
ledger appends, heartbeats, the job's other state blobs, the Durable task hub, and the
hosts' polling of their queues. Prints requests per file and per 1,000 files (storage
transactions, what the account bills) for each size; writes bench/results/storage_requests.json.
The debug log slows Azurite: these runs count, they never time.
"""

from __future__ import annotations

import argparse
import re
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

ENDPOINT = "bench-requests"
INPUT_PREFIX = "bench/requests"
WARMUP_PREFIX = "bench/requests-warmup"
WARMUP_FILES = 50
SETTLE_SECONDS = 3.0
_REQUEST = re.compile(r"RequestMethod=(\w+) RequestURL=(\S+)")
# The Durable task hub's queues and containers (host.json's durableTask.hubName "batchfn").
HUB_PARTS = ("batchfn-control", "batchfn-workitems", "batchfn-instances",
             "batchfn-largemessages", "batchfn-leases", "batchfn-history")


def classify(method: str, url: str) -> str:
    """What one request was for, from its method and URL (path and query)."""
    path, _, query = url.partition("?")
    parts = path.split("/")[4:]  # http: '' host account <container or queue> ...
    where = parts[0] if parts else ""
    rest = "/".join(parts[1:])
    if where.startswith(HUB_PARTS):
        return "durable task hub"
    if where.startswith("minibatches"):
        if "messages" not in rest:
            return "mini-batch queue: other"
        kind = {"POST": "sent", "DELETE": "deleted", "PUT": "updated"}.get(method, "received")
        return f"mini-batch message {kind}"
    if where.startswith(("azure-webjobs", "devhost")) or "messages" in rest:
        return "other queue polling" if method == "GET" and "messages" in rest \
            else "host bookkeeping"
    if "comp=list" in query:
        return "listing"
    if where == "batchfn-data" and method == "GET":
        return "input GET"
    if where == "batchfn-state":
        if "/ledger/" in f"/{rest}":
            return "ledger append" if "comp=appendblock" in query else "ledger read"
        if "/heartbeats/" in f"/{rest}" or "heartbeats" in query:
            return "heartbeats"
        return "job state (record, manifests, progress, logs, ...)"
    if where in ("batchfn-jobs", "batchfn-registry", "batchfn-assets"):
        return f"{where} blobs"
    return f"other ({method} {where})"


def count_requests(log: Path, start: int) -> tuple[Counter, int]:
    """Requests in `log` from byte `start` on, by what they were for; and the end offset."""
    counts: Counter = Counter()
    with log.open("rb") as file:
        file.seek(start)
        data = file.read()
    for line in data.decode("utf-8", errors="replace").splitlines():
        match = _REQUEST.search(line)
        if match:
            counts[classify(match.group(1), match.group(2))] += 1
    return counts, start + len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    started_at = now_utc()
    pngs = sorted((DATA_DIR / "full").glob("*.png"))[:args.files]
    if len(pngs) < args.files:
        prepare(DATA_DIR)
        pngs = sorted((DATA_DIR / "full").glob("*.png"))[:args.files]
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-requests-") as folder:
        log = Path(folder) / "azurite-debug.log"
        with running_stack("requests", azurite_debug_log=log) as stack:
            client = stack.client
            client.create_endpoint(document={"name": ENDPOINT})
            client.create_compute(document=TUTORIAL_COMPUTE)  # the deployment's batch-cluster
            client.create_deployment(TORCH_DEPLOYMENT / "deployment.yml",
                                     endpoint_name=ENDPOINT, set_default=True)
            container = data_container(stack.blob_service())
            bodies = [(png.name, png.read_bytes()) for png in pngs]
            upload_blobs(container, ((f"{INPUT_PREFIX}/{n}", b) for n, b in bodies))
            upload_blobs(container, ((f"{WARMUP_PREFIX}/{n}", b)
                                     for n, b in bodies[:WARMUP_FILES]))
            run_job(client, ENDPOINT, _uri(WARMUP_PREFIX), WARMUP_FILES,
                    settings={"mini_batch_size": 10}, poll=0.25)
            for size in sizes:
                _, offset = count_requests(log, 0)
                run = run_job(client, ENDPOINT, _uri(INPUT_PREFIX), len(pngs),
                              settings={"mini_batch_size": size}, poll=0.25)
                time.sleep(SETTLE_SECONDS)  # the job's last deletes; the log's buffer
                counts, _ = count_requests(log, offset)
                total = sum(counts.values())
                figures[str(size)] = {
                    "files": len(pngs), "job_seconds": round(run.total_seconds, 2),
                    "requests": total,
                    "requests_per_file": round(total / len(pngs), 3),
                    "transactions_per_1000_files": round(total * 1000 / len(pngs)),
                    "by_kind": dict(counts.most_common()),
                }
                say(f"mini_batch_size {size}: {total} requests, "
                    f"{total / len(pngs):.3f} per file")
                for kind, count in counts.most_common():
                    say(f"  {count:7d}  {kind}")
    path = write_results("storage_requests", figures, {
        "files": len(pngs), "mini_batch_sizes": sizes, "warmup_files": WARMUP_FILES,
        "deployment": "samples/mnist/deployment-torch", "client_poll_seconds": 0.25,
    }, started_at, path=args.results)
    print(f"results: {path}")
    return 0


def _uri(prefix: str) -> str:
    return f"azureml://datastores/workspaceblobstore/paths/{prefix}"


def say(text: str) -> None:
    print(f"[requests] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
