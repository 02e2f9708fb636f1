"""The batchfn Functions app: builds the app and registers one blueprint per concern."""

import azure.durable_functions as df
import azure.functions as func

from functions.health import bp as health

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health)
