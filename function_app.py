"""The batchfn Functions app: builds the app and registers one blueprint per concern."""

import azure.durable_functions as df
import azure.functions as func

from functions.control_api import bp as control_api
from functions.health import bp as health
from functions.openapi import bp as openapi

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
app.register_functions(control_api)
app.register_functions(openapi)
