"""Where the engine uses another library's private API: one module per library (diffusers.py), with the versions
it was checked against (pinned in pyproject.toml) and a self-test that engine ranks run at start, failing closed."""
