"""Blob fixture app: each function reports through the RESULTS queue."""

import json

import azure.functions as func

app = func.FunctionApp()


@app.blob_trigger(arg_name="blob", path="%DROP_CONTAINER%/{name}",
                  connection="AzureWebJobsStorage")
@app.queue_output(arg_name="results", queue_name="%RESULTS_QUEUE%",
                  connection="AzureWebJobsStorage")
@app.blob_output(arg_name="copy", path="%DROP_CONTAINER%-copies/{name}",
                 connection="AzureWebJobsStorage")
def dropped(blob: func.InputStream, results: func.Out[str], copy: func.Out[bytes]) -> None:
    """Reports each new or changed blob and copies it (output path from {name})."""
    content = blob.read()
    copy.set(content)
    results.set(json.dumps({"function": "dropped", "name": blob.name, "length": blob.length,
                            "uri": blob.uri, "content": content.decode()}))


@app.blob_trigger(arg_name="data", path="%GRID_CONTAINER%/in/{stem}.txt",
                  connection="AzureWebJobsStorage", source=func.BlobSource.EVENT_GRID)
@app.queue_output(arg_name="$return", queue_name="%RESULTS_QUEUE%",
                  connection="AzureWebJobsStorage")
def gridded(data: bytes) -> str:
    """Event Grid source; bytes parameter; reports through $return."""
    return json.dumps({"function": "gridded", "content": data.decode()})


@app.blob_trigger(arg_name="blob", path="%BAD_CONTAINER%/{name}",
                  connection="AzureWebJobsStorage")
def broken(blob: func.InputStream) -> None:
    """Always fails."""
    raise RuntimeError(f"cannot read {blob.name}")
