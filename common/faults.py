"""Fault injection, so that tests can make each component of the daemon fail for real.

    STREAMER_FAULTS="decoder:3"            the decoder raises on its 3rd pass through `point("decoder")`
    STREAMER_FAULTS="encoder:2:hang,http"  the encoder blocks forever on its 2nd pass; HTTP raises on its 1st

Every component calls `point(name)` once per unit of work (a block, a packet, a request). With the variable unset
— always, outside the tests — a point costs one dict lookup.
"""
from __future__ import annotations

import os
import threading

ENV = "STREAMER_FAULTS"


class InjectedFault(RuntimeError):
    """Raised at an armed fault point."""


def parse(spec: str) -> dict[str, tuple[int, str]]:
    """'name[:n][:raise|hang],…' → {name: (n, action)}."""
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, *rest = item.split(":")
        n = int(rest[0]) if rest and rest[0] else 1
        action = rest[1] if len(rest) > 1 else "raise"
        if n < 1 or action not in ("raise", "hang"):
            raise ValueError(f"{ENV}: bad item {item!r} (want name[:n][:raise|hang])")
        out[name] = (n, action)
    return out


_armed = parse(os.environ.get(ENV, ""))
_passes: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """Raise InjectedFault (or block forever) if `name` is armed and this is its n-th or a later pass."""
    if name not in _armed:
        return
    n, action = _armed[name]
    with _lock:
        _passes[name] = count = _passes.get(name, 0) + 1
    if count < n:
        return
    if action == "hang":
        threading.Event().wait()
    raise InjectedFault(f"injected fault (pass {count})")
