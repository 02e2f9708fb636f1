"""The control app's engine: the registry of endpoints, deployments and assets; invoke,
planning, the job's orchestration and its checks, finalize, blob drop; and the job
operations the HTTP API serves. Nothing here is imported by the scoring app."""
