"""The folder the daemon keeps its caches in across restarts: $STREAMER_COMPILE_CACHE, else systemd's
$CACHE_DIRECTORY, else ~/.cache/endless-streamer. Compiled graphs go to <root>/inductor (pipeline/model/compile.py), and
Python bytecode to <root>/pycache where the environment turned bytecode off (use_bytecode_cache)."""
from __future__ import annotations

import importlib.util
import os
import sys


def cache_root() -> str:
    return (os.environ.get("STREAMER_COMPILE_CACHE") or os.environ.get("CACHE_DIRECTORY")
            or os.path.join(os.path.expanduser("~"), ".cache", "endless-streamer"))


def use_bytecode_cache(probe: str = "torch") -> str | None:
    """Where bytecode writing is off (PYTHONDONTWRITEBYTECODE, as container images set it) over packages installed
    without .pyc files, every start compiles torch's and diffusers' sources again: ~10 s of an engine rank's start
    on an H200 host. Then keep this process's bytecode in <root>/pycache (the packages' folders are not written to).
    Call before the heavy imports. Returns the folder, or None where nothing needs it: bytecode is written anyway,
    the `probe` package has its .pyc files, the user chose a PYTHONPYCACHEPREFIX, or STREAMER_NO_BYTECODE_CACHE=1."""
    if (not sys.dont_write_bytecode or sys.pycache_prefix
            or os.environ.get("STREAMER_NO_BYTECODE_CACHE") == "1"):
        return None
    spec = importlib.util.find_spec(probe)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    if os.path.exists(importlib.util.cache_from_source(spec.origin)):
        return None  # installed with bytecode (pip compiles by default): using it is faster than a cache of ours
    path = os.path.join(cache_root(), "pycache")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # an unwritable cache: start as before, only slower
    sys.pycache_prefix = path
    sys.dont_write_bytecode = False
    return path
