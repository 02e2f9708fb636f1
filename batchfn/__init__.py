"""batchfn's command line (`batchfn`) and Python client over the HTTP API."""
