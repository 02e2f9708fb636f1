"""HTTP fixture app: routes, auth levels, outputs, failures."""

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    """Greets ?name=."""
    return func.HttpResponse(f"hello {req.params.get('name', 'world')}")


@app.route(route="items/{id:int}/{*rest}", methods=["GET", "POST"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    """Echoes what the host passed in."""
    return func.HttpResponse(
        json.dumps({
            "route": dict(req.route_params), "method": req.method,
            "params": dict(req.params), "body": req.get_body().decode(),
            "header": req.headers.get("x-test"),
        }),
        status_code=200, mimetype="application/json",
    )


@app.route(route="items/special", auth_level=func.AuthLevel.ANONYMOUS)
def special(req: func.HttpRequest) -> str:
    """A literal segment wins over a parameter."""
    return "special"


@app.route(route="opt/{name?}", auth_level=func.AuthLevel.ANONYMOUS)
def optional(req: func.HttpRequest) -> func.HttpResponse:
    """An optional parameter."""
    return func.HttpResponse(req.route_params.get("name", "<none>"))


@app.route(route="admin", auth_level=func.AuthLevel.ADMIN)
def admin(req: func.HttpRequest) -> func.HttpResponse:
    """Needs the master key."""
    return func.HttpResponse("admin")


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    """Fails."""
    raise RuntimeError("boom")


@app.route(route="nothing", auth_level=func.AuthLevel.ANONYMOUS)
def nothing(req: func.HttpRequest) -> None:
    """Returns nothing."""


@app.route(route="ctx", auth_level=func.AuthLevel.ANONYMOUS)
async def ctx(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """An async function with the invocation context."""
    return func.HttpResponse(
        json.dumps({"invocation_id": context.invocation_id, "name": context.function_name}),
        status_code=202, headers={"x-custom": "yes"}, mimetype="application/json",
    )


@app.route(route="out/{id}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="msg", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="doc", path="%OUT_CONTAINER%/{id}-{kind}.txt",
                 connection="AzureWebJobsStorage")
def out(req: func.HttpRequest, msg: func.Out[str], doc: func.Out[bytes]) -> func.HttpResponse:
    """Writes a queue message and a blob; `kind` comes from the JSON body."""
    msg.set(f"queued {req.route_params['id']}")
    doc.set(req.get_body())
    return func.HttpResponse("written", status_code=201)


@app.route(route="read/{name}", auth_level=func.AuthLevel.ANONYMOUS)
@app.blob_input(arg_name="doc", path="%OUT_CONTAINER%/{name}", connection="AzureWebJobsStorage")
def read(req: func.HttpRequest, doc: bytes | None) -> func.HttpResponse:
    """A blob input named by the route."""
    if doc is None:
        return func.HttpResponse("missing", status_code=404)
    return func.HttpResponse(doc, mimetype="application/octet-stream")
