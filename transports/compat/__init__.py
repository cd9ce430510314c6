"""Where the transports use another library's private API: one module per library (aiortc.py, aioice.py), each with
the versions it was checked against (pinned in pyproject.toml) and a self-test that the daemon runs at start and
that fails closed."""
