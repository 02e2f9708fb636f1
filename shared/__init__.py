"""batchfn's host-agnostic engine. Nothing here imports `azure.functions`."""
