"""The contract between batchfn's parts: what users name and send, what the apps store and
put on queues. Pure Python (no storage SDK, numpy or pandas), and self-contained: modules
import each other relatively, so the client ships this package as `batchfn.contract`
(pyproject.toml) and checks documents exactly as the API does."""
