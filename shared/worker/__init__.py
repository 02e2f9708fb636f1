"""The worker runtime: what runs inside a scoring worker process, in the deployment's own
environment. It loads the scoring script, reads the mini-batch's inputs from the read URLs
the host signed, calls init() and run(), and encodes what run() returned. It imports
nothing of the engine (shared.contract, storage, control, scoring), so it runs whatever
the deployment's environment holds; protocol.py is what crosses the pipe to the host."""
