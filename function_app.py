"""The batchfn Functions app: builds the app and registers one blueprint per concern."""

import azure.durable_functions as df
import azure.functions as func

from functions.blob_drop import bp as blob_drop
from functions.control_api import bp as control_api
from functions.health import bp as health
from functions.jobs_api import bp as jobs_api
from functions.openapi import bp as openapi
from functions.orchestration import bp as orchestration
from functions.scoring_queue import bp as scoring_queue
from functions.studio import bp as studio

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
app.register_functions(control_api)
app.register_functions(openapi)
app.register_functions(jobs_api)
app.register_functions(orchestration)
app.register_functions(scoring_queue)
app.register_functions(blob_drop)
app.register_functions(studio)
