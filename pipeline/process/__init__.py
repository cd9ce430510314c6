"""The engine process: `python -m pipeline.process.worker` (rank 0: the tick loop in runner, decode beside it) and
the other ranks' set-up (ranks), talking to the daemon through pipeline.wire."""
