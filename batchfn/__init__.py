"""batchfn's command line (`batchfn`), Python client and azure-ai-ml-shaped SDK facade
(`batchfn.ml`), over the HTTP API."""
