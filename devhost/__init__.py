"""devhost: a local host for Python v2-model Azure Functions apps, over Azurite."""
