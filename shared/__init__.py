"""batchfn's host-agnostic engine; nothing here imports `azure.functions`. Five packages:
`contract` (pure: what the parts agree on), `storage` (storage access both apps share),
`control` and `scoring` (the two apps' engines) and `worker` (the runtime inside a
deployment's environment). docs/architecture.md draws them and the rules between them."""
