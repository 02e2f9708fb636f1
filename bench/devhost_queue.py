"""Queue-trigger throughput through devhost ÷ raw SDK receive+delete throughput.

One run on one fresh Azurite: the same number of small messages is drained (1) by the raw
SDK, sequentially (receive 32, delete each) and concurrently (async, deletes in parallel),
and (2) by devhost's queue listener invoking a no-op queue-triggered function with the
repository's host.json queue settings. The ratio divides devhost's rate by the faster raw
rate. Prints the result and writes bench/results/devhost_queue.json. Goal: ratio ≥ 0.8.

    .venv/bin/python bench/devhost_queue.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import azure.functions as func
from azure.storage.queue import QueueClient
from azure.storage.queue.aio import QueueClient as AsyncQueueClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devhost.azurite import Azurite, free_port  # noqa: E402
from devhost.config import HostConfig  # noqa: E402
from devhost.host import DevHost  # noqa: E402

RESULT = REPO / "bench" / "results" / "devhost_queue.json"
BODY = "eyJtaW5pX2JhdGNoIjogMX0="  # base64 of a small JSON message


def fill(connection: str, name: str, count: int) -> None:
    """Create queue `name` holding `count` messages (sent concurrently, not timed)."""
    async def send() -> None:
        async with AsyncQueueClient.from_connection_string(connection, name) as queue:
            await queue.create_queue()
            for start in range(0, count, 64):
                await asyncio.gather(*(queue.send_message(BODY)
                                       for _ in range(min(64, count - start))))
    asyncio.run(send())


def raw_sequential(connection: str, name: str, count: int) -> float:
    """Messages/s: receive up to 32, delete each, until `count` are gone."""
    queue = QueueClient.from_connection_string(connection, name)
    done, started = 0, time.perf_counter()
    while done < count:
        for page in queue.receive_messages(messages_per_page=32).by_page():
            for message in page:
                queue.delete_message(message)
                done += 1
            break
    return count / (time.perf_counter() - started)


def raw_concurrent(connection: str, name: str, count: int) -> float:
    """Messages/s: async receive up to 32, delete them concurrently, until `count` are gone."""
    async def drain() -> float:
        async with AsyncQueueClient.from_connection_string(connection, name) as queue:
            done, started = 0, time.perf_counter()
            while done < count:
                pages = queue.receive_messages(messages_per_page=32).by_page()
                page = [message async for message in await pages.__anext__()]
                await asyncio.gather(*(queue.delete_message(m) for m in page))
                done += len(page)
            return count / (time.perf_counter() - started)
    return asyncio.run(drain())


def through_devhost(connection: str, name: str, count: int) -> float:
    """Invocations/s of a no-op queue-triggered function served by devhost."""
    app = func.FunctionApp()
    invoked = [0]
    finished = asyncio.Event()

    @app.queue_trigger(arg_name="message", queue_name=name, connection="AzureWebJobsStorage")
    def noop(message: func.QueueMessage) -> None:
        invoked[0] += 1
        if invoked[0] == count:
            loop.call_soon_threadsafe(finished.set)

    os.environ["AzureWebJobsStorage"] = connection
    with tempfile.TemporaryDirectory() as state:
        os.environ["DEVHOST_STATE_DIR"] = state
        host = DevHost(app, config=HostConfig.load(REPO / "host.json"),
                       connection_string=connection, script_root=REPO,
                       port=free_port())

        async def serve() -> float:
            stop = asyncio.Event()
            started = time.perf_counter()
            running = asyncio.create_task(host.run(stop))
            await finished.wait()
            stop.set()
            await running  # the last deletes happen before run() returns
            return count / (time.perf_counter() - started)

        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(serve())
        finally:
            loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    count = parser.parse_args().messages
    # Invocation log lines are formatted as in a real run, then discarded.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
    logging.getLogger("azure").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as location, Azurite(Path(location)) as azurite:
        connection = azurite.connection_string
        fill(connection, "rawseq", count)
        sequential = raw_sequential(connection, "rawseq", count)
        fill(connection, "rawconc", count)
        concurrent = raw_concurrent(connection, "rawconc", count)
        fill(connection, "devhost", count)
        devhost = through_devhost(connection, "devhost", count)
    raw = max(sequential, concurrent)
    options = HostConfig.load(REPO / "host.json").queues
    result = {
        "benchmark": "devhost_queue",
        "messages": count,
        "raw_sdk_sequential_per_s": round(sequential, 1),
        "raw_sdk_concurrent_per_s": round(concurrent, 1),
        "raw_sdk_per_s": round(raw, 1),
        "devhost_per_s": round(devhost, 1),
        "ratio": round(devhost / raw, 3),
        "goal": 0.8,
        "queue_options": {"batchSize": options.batch_size,
                          "newBatchThreshold": options.new_batch_threshold},
        "cpus": os.cpu_count(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
