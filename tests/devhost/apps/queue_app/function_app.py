"""Queue fixture app: each function reports through the RESULTS queue."""

import json

import azure.functions as func

app = func.FunctionApp()


def report(message: func.QueueMessage, **extra: object) -> str:
    return json.dumps({
        "id": message.id, "body": message.get_body().decode(),
        "dequeue_count": message.dequeue_count, "pop_receipt": bool(message.pop_receipt),
        "insertion_time": message.insertion_time.isoformat(),
        "expiration_time": message.expiration_time.isoformat(),
        "next_visible": message.time_next_visible.isoformat(), **extra,
    })


@app.queue_trigger(arg_name="message", queue_name="%WORK_QUEUE%",
                   connection="AzureWebJobsStorage")
@app.queue_output(arg_name="results", queue_name="%RESULTS_QUEUE%",
                  connection="AzureWebJobsStorage")
def work(message: func.QueueMessage, results: func.Out[str]) -> None:
    """Succeeds at once."""
    results.set(report(message))


@app.queue_trigger(arg_name="message", queue_name="%FLAKY_QUEUE%",
                   connection="AzureWebJobsStorage")
@app.queue_output(arg_name="results", queue_name="%RESULTS_QUEUE%",
                  connection="AzureWebJobsStorage")
def flaky(message: func.QueueMessage, results: func.Out[str]) -> None:
    """Fails on the first try, succeeds on the second."""
    if message.dequeue_count < 2:
        raise RuntimeError(f"try {message.dequeue_count} fails")
    results.set(report(message))


@app.queue_trigger(arg_name="text", queue_name="%DOOMED_QUEUE%",
                   connection="AzureWebJobsStorage")
def doomed(text: str) -> None:
    """Always fails (str parameter: the decoded body)."""
    raise ValueError(f"cannot handle {text}")
