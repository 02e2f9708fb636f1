"""The scoring app's engine: the mini-batch queue handler and the scoring runtime, which
keeps warm worker processes per deployment, signs their inputs' read grants and keeps
user code away from the host's secrets. The code that runs inside a worker process is
shared/worker; nothing here is imported by the control app."""
